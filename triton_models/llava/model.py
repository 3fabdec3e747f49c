"""TritonPythonModel for a LLaVA model: the chat LLM's model plus the vLLM backend's `image` input.

Images (base64, one per placeholder in the prompt) are decoded and preprocessed here as the HF image
processor does, encoded by the vision model (`parameters.vision_model`, batched, through BLS), and their
features replace the image tokens' embeddings at prefill. Generation, sampling, stops, streaming and
cancellation are the chat engine's: text-only and image requests share one running batch.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from triton_models import config_parameters
from triton_models.contract import INVALID_IMAGE
from triton_models.llava.preprocess import ImageProcessor, InvalidImage, decode_base64_image
from triton_models.llava.prompt import ImagePrompt
from triton_models.llm import model as llm_model
from triton_models.llm.params import InvalidRequest

DEFAULT_MAX_IMAGES = 4
DEFAULT_IMAGE_TOKEN = "<image>"
IMAGE_INPUT = {"name": "image", "data_type": "TYPE_STRING", "dims": [-1], "optional": True}
FEATURES_OUTPUT = "image_features"


class TritonPythonModel(llm_model.TritonPythonModel):
    @staticmethod
    def auto_complete_config(auto_complete_model_config):
        config = llm_model.TritonPythonModel.auto_complete_config(auto_complete_model_config)
        if IMAGE_INPUT["name"] not in {i["name"] for i in config.as_dict()["input"]}:
            config.add_input(IMAGE_INPUT)
        return config

    def initialize(self, args):
        super().initialize(args)
        try:
            self._initialize_images(args)
        except BaseException:
            self.finalize()  # the engine started above stops, and its metrics leave with the failed load
            raise

    def _initialize_images(self, args) -> None:
        config = json.loads(args["model_config"])
        params = config_parameters(config)
        version_dir = Path(args["model_repository"]) / args["model_version"]
        self.vision_model = params.get("vision_model") or f"{args['model_name']}_vision"
        self.max_images = int(params.get("max_images") or DEFAULT_MAX_IMAGES)
        self.processor = ImageProcessor.from_folder(version_dir)
        self._encoded: dict[int, np.ndarray | Exception | None] = {}  # per request id, while it is submitted
        self.prompts = ImagePrompt(self.engine.tokenizer, params.get("image_token") or DEFAULT_IMAGE_TOKEN,
                                   int(params["image_token_id"]), int(params["image_seq_length"]))
        self.logger.log_info(f"{args['model_name']}: images through {self.vision_model}, "
                             f"{self.prompts.image_seq_length} tokens each, up to {self.max_images} per request")

    async def execute(self, requests):
        """Requests overlap here: their images are decoded in threads and encoded by concurrent BLS calls (the
        vision model's dynamic batcher joins them); each then goes to the engine as the chat model sends it."""
        await asyncio.gather(*(self._execute_one(request) for request in requests))

    async def _execute_one(self, request) -> None:
        try:
            encoded = await self._encode_images(request)
        except Exception as exc:  # noqa: BLE001 - raised again in _prompt_inputs, mapped by the chat model
            encoded = exc
        self._encoded[id(request)] = encoded
        try:
            super().execute([request])
        finally:
            self._encoded.pop(id(request), None)

    async def _encode_images(self, request) -> np.ndarray | None:
        """Image features [images, tokens, hidden] of the request's `image` input, None without images."""
        tensor = pb_utils.get_input_tensor_by_name(request, IMAGE_INPUT["name"])
        images = list(tensor.as_numpy().reshape(-1)) if tensor is not None else []
        if not images:
            return None
        if len(images) > self.max_images:
            raise InvalidRequest(f"{len(images)} images sent; this model takes at most {self.max_images} per request",
                                 IMAGE_INPUT["name"])
        pixels = await asyncio.to_thread(self._pixels, images)
        response = await pb_utils.InferenceRequest(
            model_name=self.vision_model, requested_output_names=[FEATURES_OUTPUT],
            inputs=[pb_utils.Tensor("pixel_values", pixels)],
        ).async_exec()
        if response.has_error():
            raise RuntimeError(f"vision model {self.vision_model}: {response.error().message()}")
        return pb_utils.get_output_tensor_by_name(response, FEATURES_OUTPUT).as_numpy()

    def _pixels(self, images: list) -> np.ndarray:
        pixels = []
        for i, data in enumerate(images):
            try:
                pixels.append(self.processor(decode_base64_image(data)))
            except InvalidImage as exc:
                raise InvalidRequest(f"image {i}: {exc}", IMAGE_INPUT["name"], INVALID_IMAGE) from exc
        return np.stack(pixels)

    def _prompt_ids(self, prompt: str, add_special_tokens: bool | None = None) -> list[int]:
        return self.prompts.token_ids(prompt, add_special_tokens)

    def _prompt_inputs(self, request, prompt: str) -> dict:
        encoded = self._encoded.get(id(request))
        if isinstance(encoded, Exception):
            raise encoded
        if encoded is None:
            self.prompts.check_text_only(prompt)
            return {}
        prompt_ids, embeds = self.prompts.build(prompt, encoded)
        return {"prompt_ids": prompt_ids, "prompt_embeds": embeds}
