"""TritonPythonModel for a LLaVA model: the chat LLM's model plus the vLLM backend's `image` input.

Images (base64, one per placeholder in the prompt) are decoded and preprocessed here as the HF image
processor does, encoded by the vision model (`parameters.vision_model`, batched, through BLS), and their
features replace the image tokens' embeddings at prefill. Generation, sampling, stops, streaming and
cancellation are the chat engine's: text-only and image requests share one running batch.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

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
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        version_dir = Path(args["model_repository"]) / args["model_version"]
        self.vision_model = params.get("vision_model") or f"{args['model_name']}_vision"
        self.max_images = int(params.get("max_images") or DEFAULT_MAX_IMAGES)
        self.processor = ImageProcessor.from_folder(version_dir)
        self.prompts = ImagePrompt(self.engine.tokenizer, params.get("image_token") or DEFAULT_IMAGE_TOKEN,
                                   int(params["image_token_id"]), int(params["image_seq_length"]))
        self.logger.log_info(f"{args['model_name']}: images through {self.vision_model}, "
                             f"{self.prompts.image_seq_length} tokens each, up to {self.max_images} per request")

    def _prompt_inputs(self, request, prompt: str) -> dict:
        tensor = pb_utils.get_input_tensor_by_name(request, IMAGE_INPUT["name"])
        images = list(tensor.as_numpy().reshape(-1)) if tensor is not None else []
        if not images:
            self.prompts.check_text_only(prompt)
            return {}
        if len(images) > self.max_images:
            raise InvalidRequest(f"{len(images)} images sent; this model takes at most {self.max_images} per request")
        pixels = []
        for i, data in enumerate(images):
            try:
                pixels.append(self.processor(decode_base64_image(data)))
            except InvalidImage as exc:
                raise InvalidRequest(f"image {i}: {exc}") from exc
        prompt_ids, embeds = self.prompts.build(prompt, self._encode(np.stack(pixels)))
        return {"prompt_ids": prompt_ids, "prompt_embeds": embeds}

    def _encode(self, pixels: np.ndarray) -> np.ndarray:
        """Image features [images, tokens, hidden] from the vision model (one BLS call, batched there)."""
        response = pb_utils.InferenceRequest(
            model_name=self.vision_model, requested_output_names=[FEATURES_OUTPUT],
            inputs=[pb_utils.Tensor("pixel_values", pixels)],
        ).exec()
        if response.has_error():
            raise RuntimeError(f"vision model {self.vision_model}: {response.error().message()}")
        return pb_utils.get_output_tensor_by_name(response, FEATURES_OUTPUT).as_numpy()
