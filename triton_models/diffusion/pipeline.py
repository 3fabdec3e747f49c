"""Stable Diffusion text-to-image in numpy around three networks given as callables.

The same code runs the exported ONNX parts through ONNX Runtime (the exporter's parity check, unit tests)
and through BLS calls inside Triton (`triton_models.diffusion.model`). It follows diffusers'
`StableDiffusionPipeline`: CLIP tokenisation padded to 77, classifier-free guidance when guidance_scale > 1
(negative prompt first, then the prompt, each repeated n times), the scheduler loop, VAE decoding. The VAE
decoder network already divides by the scaling factor and maps to [0, 1] NHWC (see export_scripts.diffusion).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from triton_models.contract import INVALID_REQUEST, ModelError
from triton_models.diffusion.schedulers import make_scheduler

OUTPUT = "images"  # the Triton model's one output: UINT8 [n, height, width, 3]
TOKENIZER_FILE = "tokenizer.json"
SCHEDULER_FILE = "scheduler_config.json"

# Each network's input names (in call order) and output name: the exporter writes these into the ONNX graphs
# and configs; the BLS model and the ONNX Runtime runner call them by these names.
NETWORKS = {
    "text_encoder": (("input_ids",), "last_hidden_state"),
    "unet": (("sample", "timestep", "encoder_hidden_states"), "out_sample"),
    "vae_decoder": (("latent_sample",), "image"),
}

TextEncoder = Callable[[np.ndarray], np.ndarray]  # input_ids [B, 77] int64 -> [B, 77, D] float32
UNet = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]  # sample, timestep [B, 1], states
VaeDecoder = Callable[[np.ndarray], np.ndarray]  # latents [B, C, h, w] -> images [B, H, W, 3] in [0, 1]


def bind_networks(call: Callable[[str, dict[str, np.ndarray], str], np.ndarray]):
    """(text_encoder, unet, vae_decoder) callables over `call(part, named_inputs, output_name) -> output`."""
    def network(part):
        inputs, output = NETWORKS[part]
        return lambda *arrays: call(part, dict(zip(inputs, arrays)), output)

    return network("text_encoder"), network("unet"), network("vae_decoder")


class InvalidImageRequest(ModelError, ValueError):
    """A request the model cannot serve as asked: INVALID_REQUEST with the field (the images API's name)."""

    def __init__(self, message: str, param: str):
        super().__init__(INVALID_REQUEST, message, param)


class Cancelled(Exception):
    """The client went away; the loop stopped between steps."""


@dataclass(frozen=True)
class ImageRequest:
    """One generation: n images of height x width for one prompt."""

    prompt: str
    seed: int
    negative_prompt: str = ""
    n: int = 1
    height: int = 512
    width: int = 512
    steps: int = 50
    guidance_scale: float = 7.5


@dataclass(frozen=True)
class Settings:
    """What a served pipeline accepts and assumes, from its config parameters (see export_scripts.diffusion)."""

    sizes: tuple[tuple[int, int], ...]  # (width, height), OpenAI's "WxH" order
    default_size: tuple[int, int] = (512, 512)
    default_steps: int = 50
    default_guidance_scale: float = 7.5
    max_n: int = 4
    max_steps: int = 100
    max_prompt_chars: int = 4000

    @staticmethod
    def parse_sizes(text: str) -> tuple[tuple[int, int], ...]:
        sizes = []
        for item in text.split(","):
            w, sep, h = item.strip().lower().partition("x")
            if not sep:
                raise ValueError(f"size {item.strip()!r} is not WxH")
            sizes.append((int(w), int(h)))
        return tuple(sizes)

    @classmethod
    def from_parameters(cls, params: dict[str, str]) -> Settings:
        sizes = cls.parse_sizes(params["sizes"])
        return cls(
            sizes=sizes,
            default_size=cls.parse_sizes(params.get("default_size") or "{}x{}".format(*sizes[0]))[0],
            default_steps=int(params.get("default_steps", cls.default_steps)),
            default_guidance_scale=float(params.get("default_guidance_scale", cls.default_guidance_scale)),
            max_n=int(params.get("max_n", cls.max_n)),
            max_steps=int(params.get("max_steps", cls.max_steps)),
        )

    def request(self, get: Callable[[str], object]) -> ImageRequest:
        """An ImageRequest from named input values (`get(name)` is None when absent), defaults filled in."""
        def value(name, default, kind):
            v = get(name)
            return default if v is None else kind(v)

        width, height = self.default_size
        request = ImageRequest(
            prompt=value("prompt", "", str),
            seed=value("seed", -1, int),
            negative_prompt=value("negative_prompt", "", str),
            n=value("n", 1, int),
            height=value("height", height, int),
            width=value("width", width, int),
            steps=value("steps", self.default_steps, int),
            guidance_scale=value("guidance_scale", self.default_guidance_scale, float),
        )
        self.check(request)
        return request

    def check(self, request: ImageRequest) -> None:
        """InvalidImageRequest naming the first thing wrong with the request (and its field)."""
        if not request.prompt.strip():
            raise InvalidImageRequest("prompt must not be empty", "prompt")
        if len(request.prompt) > self.max_prompt_chars:
            raise InvalidImageRequest(f"prompt is longer than {self.max_prompt_chars} characters", "prompt")
        if len(request.negative_prompt) > self.max_prompt_chars:
            raise InvalidImageRequest(f"negative_prompt is longer than {self.max_prompt_chars} characters",
                                      "negative_prompt")
        if (request.width, request.height) not in self.sizes:
            allowed = ", ".join(f"{w}x{h}" for w, h in self.sizes)
            raise InvalidImageRequest(f"size {request.width}x{request.height} is not supported; use one of {allowed}",
                                      "size")
        if not 1 <= request.n <= self.max_n:
            raise InvalidImageRequest(f"n must be between 1 and {self.max_n}, got {request.n}", "n")
        if not 1 <= request.steps <= self.max_steps:
            raise InvalidImageRequest(f"steps must be between 1 and {self.max_steps}, got {request.steps}", "steps")
        if not 0.0 <= request.guidance_scale <= 50.0:  # also false for NaN
            raise InvalidImageRequest(f"guidance_scale must be between 0 and 50, got {request.guidance_scale}",
                                      "guidance_scale")
        if not 0 <= request.seed < 2**63:
            raise InvalidImageRequest(f"seed must be between 0 and 2**63 - 1, got {request.seed}", "seed")


class PromptTokenizer:
    """CLIP BPE via `tokenizers`; the exported tokenizer.json already pads and truncates to 77 tokens."""

    def __init__(self, path: Path):
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(path))

    def __call__(self, texts: list[str]) -> np.ndarray:
        return np.array([e.ids for e in self.tokenizer.encode_batch(texts)], dtype=np.int64)


def initial_latents(seed: int, n: int, channels: int, height: int, width: int) -> np.ndarray:
    """The request's noise: numpy's PCG64 seeded with `seed` (not torch's generator)."""
    return np.random.default_rng(seed).standard_normal((n, channels, height, width), dtype=np.float32)


class StableDiffusion:
    """Text-to-image over three networks; stateless between requests (one scheduler per request)."""

    def __init__(self, tokenizer: Callable[[list[str]], np.ndarray], text_encoder: TextEncoder, unet: UNet,
                 vae_decoder: VaeDecoder, scheduler_config: dict, vae_scale_factor: int, latent_channels: int = 4):
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder
        self.unet = unet
        self.vae_decoder = vae_decoder
        self.scheduler_config = dict(scheduler_config)
        make_scheduler(self.scheduler_config)  # fail at load time, not per request
        self.vae_scale_factor = vae_scale_factor
        self.latent_channels = latent_channels

    @classmethod
    def from_directory(cls, directory: Path, text_encoder: TextEncoder, unet: UNet, vae_decoder: VaeDecoder,
                       vae_scale_factor: int, latent_channels: int = 4) -> StableDiffusion:
        """Tokenizer and scheduler config from an exported pipeline's version folder."""
        directory = Path(directory)
        scheduler_config = json.loads((directory / SCHEDULER_FILE).read_text())
        return cls(PromptTokenizer(directory / TOKENIZER_FILE), text_encoder, unet, vae_decoder,
                   scheduler_config, vae_scale_factor, latent_channels)

    def latent_shape(self, request: ImageRequest) -> tuple[int, int, int, int]:
        f = self.vae_scale_factor
        if request.height % f or request.width % f:
            raise ValueError(f"height and width must be multiples of {f}")
        return request.n, self.latent_channels, request.height // f, request.width // f

    def generate(self, request: ImageRequest, cancelled: Callable[[], bool] = lambda: False,
                 latents: np.ndarray | None = None) -> np.ndarray:
        """Images [n, height, width, 3] float32 in [0, 1]. Raises Cancelled when `cancelled()` turns true."""
        shape = self.latent_shape(request)
        if latents is None:
            latents = initial_latents(request.seed, *shape)
        guided = request.guidance_scale > 1.0
        texts = [request.negative_prompt, request.prompt] if guided else [request.prompt]
        states = self.text_encoder(self.tokenizer(texts))
        states = np.repeat(states, request.n, axis=0)  # [neg x n, prompt x n]

        scheduler = make_scheduler(self.scheduler_config)
        timesteps = scheduler.set_timesteps(request.steps)
        latents = (latents * np.float32(scheduler.init_noise_sigma)).astype(np.float32)
        for i, t in enumerate(timesteps):
            if cancelled():
                raise Cancelled(f"cancelled before step {i + 1} of {len(timesteps)}")
            model_input = np.concatenate([latents, latents]) if guided else latents
            model_input = scheduler.scale_model_input(model_input, i)
            timestep = np.full((len(model_input), 1), t, dtype=np.float32)
            noise = self.unet(model_input, timestep, states)
            if guided:
                uncond, cond = np.split(noise, 2)
                noise = uncond + np.float32(request.guidance_scale) * (cond - uncond)
            latents = scheduler.step(noise, i, latents)
        if cancelled():
            raise Cancelled("cancelled before decoding")
        return self.vae_decoder(latents)


def to_uint8(images: np.ndarray) -> np.ndarray:
    """[0, 1] floats to bytes, rounding as diffusers' `numpy_to_pil` does."""
    return (np.clip(images, 0.0, 1.0) * 255).round().astype(np.uint8)
