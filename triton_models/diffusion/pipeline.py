"""Stable Diffusion in numpy around its networks given as callables: text-to-image, image-to-image, inpainting.

The same code runs the exported ONNX parts through ONNX Runtime (the exporter's parity check, unit tests)
and through BLS calls inside Triton (`triton_models.diffusion.model`). It follows diffusers'
`StableDiffusionPipeline`: CLIP tokenisation padded to 77, classifier-free guidance when guidance_scale > 1
(negative prompt first, then the prompt, each repeated n times), the scheduler loop, VAE decoding. The VAE
decoder network already divides by the scaling factor and maps to [0, 1] NHWC (see export_scripts.diffusion).

With an `image` (an edit), it follows `StableDiffusionImg2ImgPipeline`: the VAE encoder's latents of the image
(a sample of its posterior), noised to the step `strength` of the way into the schedule, then denoised over the
remaining steps. With a `mask` too, `StableDiffusionInpaintPipeline` with an ordinary 4-channel UNet ("legacy"
inpainting, any SD checkpoint): after every step the latents outside the mask are replaced by the image's own,
noised to the next step's level; strength 1 starts the masked area from pure noise. Pixels outside the mask
are then taken from the image itself (`to_output`), as diffusers' `apply_overlay` does, so an edit leaves the
rest of the picture exactly as it was.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from triton_models.contract import (
    EDIT_STRENGTH,
    INPAINT_STRENGTH,
    INVALID_REQUEST,
    SUPPORTS_EDITS,
    ModelError,
    edit_steps,
)
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
    "vae_encoder": (("image",), "latent_mean_std"),  # edits only: a model exported without it draws, no edits
}
EDIT_NETWORK = "vae_encoder"

TextEncoder = Callable[[np.ndarray], np.ndarray]  # input_ids [B, 77] int64 -> [B, 77, D] float32
UNet = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]  # sample, timestep [B, 1], states
VaeDecoder = Callable[[np.ndarray], np.ndarray]  # latents [B, C, h, w] -> images [B, H, W, 3] in [0, 1]
# images [B, H, W, 3] in [0, 1] -> [B, 2C, h, w]: the posterior's mean, then its standard deviation, both
# already multiplied by the VAE's scaling factor (the decoder divides by it), so mean + std * eps is a latent.
VaeEncoder = Callable[[np.ndarray], np.ndarray]


def bind_networks(call: Callable[[str, dict[str, np.ndarray], str], np.ndarray],
                  parts=tuple(NETWORKS)) -> dict[str, Callable[..., np.ndarray]]:
    """{part: callable} for `parts`, over `call(part, named_inputs, output_name) -> output`."""
    def network(part):
        inputs, output = NETWORKS[part]
        return lambda *arrays: call(part, dict(zip(inputs, arrays)), output)

    return {part: network(part) for part in parts}


class InvalidImageRequest(ModelError, ValueError):
    """A request the model cannot serve as asked: INVALID_REQUEST with the field (the images API's name)."""

    def __init__(self, message: str, param: str):
        super().__init__(INVALID_REQUEST, message, param)


class Cancelled(Exception):
    """The client went away; the loop stopped between steps."""


@dataclass(frozen=True, eq=False)
class ImageRequest:
    """One generation: n images of height x width for one prompt; an edit of `image` (where `mask` says) when
    one is given."""

    prompt: str
    seed: int
    negative_prompt: str = ""
    n: int = 1
    height: int = 512
    width: int = 512
    steps: int = 50
    guidance_scale: float = 7.5
    image: np.ndarray | None = None  # uint8 [height, width, 3]: the picture to edit
    mask: np.ndarray | None = None  # uint8 [height, width]: >= 128 where to redraw (diffusers' white)
    strength: float = EDIT_STRENGTH  # edits: the fraction of the schedule redrawn (diffusers' `strength`)

    @property
    def inpainting(self) -> bool:
        return self.image is not None and self.mask is not None


def start_step(steps: int, strength: float) -> int:
    """The index of an edit's first denoising step (strength 1 runs every step, 0.5 the second half)."""
    return steps - edit_steps(steps, strength)


def repaint_mask(mask: np.ndarray) -> np.ndarray:
    """bool [H, W]: where an edit redraws, binarised at 0.5 as diffusers' mask processor does."""
    return mask >= 128


def latent_mask(mask: np.ndarray, factor: int) -> np.ndarray:
    """float32 [1, 1, h, w]: the mask at latent resolution, nearest-neighbour as diffusers' `interpolate` (each
    latent cell takes the pixel at its top-left corner)."""
    return repaint_mask(mask)[::factor, ::factor][None, None].astype(np.float32)


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
    edits: bool = False  # the model has a VAE encoder (contract.SUPPORTS_EDITS)

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
            edits=params.get(SUPPORTS_EDITS) == "true",
        )

    def request(self, get: Callable[[str], object]) -> ImageRequest:
        """An ImageRequest from named input values (`get(name)` is None when absent), defaults filled in."""
        def value(name, default, kind):
            v = get(name)
            return default if v is None else kind(v)

        width, height = self.default_size
        image, mask = get("image"), get("mask")
        request = ImageRequest(
            prompt=value("prompt", "", str),
            seed=value("seed", -1, int),
            negative_prompt=value("negative_prompt", "", str),
            n=value("n", 1, int),
            height=value("height", height, int),
            width=value("width", width, int),
            steps=value("steps", self.default_steps, int),
            guidance_scale=value("guidance_scale", self.default_guidance_scale, float),
            image=image, mask=mask,
            # Absent: diffusers' defaults, the img2img pipeline's or the inpainting pipeline's.
            strength=value("strength", INPAINT_STRENGTH if mask is not None else EDIT_STRENGTH, float),
        )
        self.check(request)
        return request

    def check(self, request: ImageRequest) -> None:
        """InvalidImageRequest naming the first thing wrong with the request (and its field)."""
        if request.image is not None or request.mask is not None:
            self.check_edit(request)
        elif not request.prompt.strip():  # an edit may have none: variations redraw the image unprompted
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

    def check_edit(self, request: ImageRequest) -> None:
        if not self.edits:
            raise InvalidImageRequest("this model does not edit images (it was exported without a VAE encoder)",
                                      "model")
        size = (request.height, request.width)
        if request.image is None:
            raise InvalidImageRequest("a mask needs an image to edit", "mask")
        if request.image.dtype != np.uint8 or request.image.shape != (*size, 3):
            raise InvalidImageRequest(f"image must be uint8 [{request.height}, {request.width}, 3] (the output "
                                      f"size), got {request.image.dtype} {list(request.image.shape)}", "image")
        if request.mask is not None and (request.mask.dtype != np.uint8 or request.mask.shape != size):
            raise InvalidImageRequest(f"mask must be uint8 [{request.height}, {request.width}] like the image, got "
                                      f"{request.mask.dtype} {list(request.mask.shape)}", "mask")
        if not 0.0 < request.strength <= 1.0:  # also false for NaN
            raise InvalidImageRequest(f"strength must be in (0, 1], got {request.strength}", "strength")
        if 1 <= request.steps <= self.max_steps and start_step(request.steps, request.strength) == request.steps:
            raise InvalidImageRequest(f"strength {request.strength} of {request.steps} steps leaves no step to run; "
                                      f"raise strength to at least {1 / request.steps:.3g} or add steps", "strength")


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


def edit_noise(seed: int, n: int, channels: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """An edit's random draws: the latents' noise (the same as `initial_latents`), then the one sample of the
    image's posterior all n images share (diffusers encodes the image once and repeats its latents)."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((n, channels, height, width), dtype=np.float32)
    return noise, rng.standard_normal((1, channels, height, width), dtype=np.float32)


class StableDiffusion:
    """Text-to-image, and edits when it has a VAE encoder; stateless between requests (one scheduler per
    request)."""

    def __init__(self, tokenizer: Callable[[list[str]], np.ndarray], text_encoder: TextEncoder, unet: UNet,
                 vae_decoder: VaeDecoder, scheduler_config: dict, vae_scale_factor: int, latent_channels: int = 4,
                 vae_encoder: VaeEncoder | None = None):
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder
        self.unet = unet
        self.vae_decoder = vae_decoder
        self.vae_encoder = vae_encoder
        self.scheduler_config = dict(scheduler_config)
        make_scheduler(self.scheduler_config)  # fail at load time, not per request
        self.vae_scale_factor = vae_scale_factor
        self.latent_channels = latent_channels

    @classmethod
    def from_directory(cls, directory: Path, networks: dict[str, Callable[..., np.ndarray]],
                       vae_scale_factor: int, latent_channels: int = 4) -> StableDiffusion:
        """Tokenizer and scheduler config from an exported pipeline's version folder; `networks` as
        `bind_networks` makes them (without a vae_encoder: no edits)."""
        directory = Path(directory)
        scheduler_config = json.loads((directory / SCHEDULER_FILE).read_text())
        return cls(PromptTokenizer(directory / TOKENIZER_FILE), networks["text_encoder"], networks["unet"],
                   networks["vae_decoder"], scheduler_config, vae_scale_factor, latent_channels,
                   vae_encoder=networks.get(EDIT_NETWORK))

    def latent_shape(self, request: ImageRequest) -> tuple[int, int, int, int]:
        f = self.vae_scale_factor
        if request.height % f or request.width % f:
            raise ValueError(f"height and width must be multiples of {f}")
        return request.n, self.latent_channels, request.height // f, request.width // f

    def encode(self, image: np.ndarray, posterior_noise: np.ndarray) -> np.ndarray:
        """Latents [1, C, h, w] of a uint8 [H, W, 3] image: a sample of the VAE encoder's posterior."""
        if self.vae_encoder is None:
            raise ValueError("this pipeline has no VAE encoder: it cannot edit images")
        mean, std = np.split(self.vae_encoder((image[None] / np.float32(255)).astype(np.float32)), 2, axis=1)
        return (mean + std * posterior_noise).astype(np.float32)

    def generate(self, request: ImageRequest, cancelled: Callable[[], bool] = lambda: False,
                 latents: np.ndarray | None = None, posterior_noise: np.ndarray | None = None,
                 on_step: Callable[[float], None] | None = None) -> np.ndarray:
        """Images [n, height, width, 3] float32 in [0, 1] (before `to_output`). `latents` is the noise and
        `posterior_noise` the draw of an edit's image latents: both from the seed unless given (parity checks
        pass torch's). Raises Cancelled when `cancelled()` turns true. `on_step` hears each denoising step's
        seconds (the model's metrics)."""
        shape = self.latent_shape(request)
        if latents is None or posterior_noise is None:
            drawn, drawn_posterior = edit_noise(request.seed, *shape)
            latents = drawn if latents is None else latents
            posterior_noise = drawn_posterior if posterior_noise is None else posterior_noise
        # Guidance pushes the prompt's prediction away from the negative prompt's: with equal texts (a variation:
        # both empty) the two agree, and the doubled UNet batch would change nothing.
        guided = request.guidance_scale > 1.0 and request.prompt != request.negative_prompt
        texts = [request.negative_prompt, request.prompt] if guided else [request.prompt]
        states = self.text_encoder(self.tokenizer(texts))
        states = np.repeat(states, request.n, axis=0)  # [neg x n, prompt x n]

        scheduler = make_scheduler(self.scheduler_config)
        timesteps = scheduler.set_timesteps(request.steps)
        start, noise, kept, keep = 0, latents, None, None
        if request.image is None:
            latents = (noise * np.float32(scheduler.init_noise_sigma)).astype(np.float32)
        else:
            start = start_step(request.steps, request.strength)
            kept = np.repeat(self.encode(request.image, posterior_noise), request.n, axis=0)
            if request.inpainting and request.strength == 1.0:  # diffusers' inpainting: the mask starts as noise
                latents = (noise * np.float32(scheduler.init_noise_sigma)).astype(np.float32)
            else:
                latents = scheduler.add_noise(kept, noise, start)
            if request.inpainting:
                keep = 1 - latent_mask(request.mask, self.vae_scale_factor)
        for i in range(start, len(timesteps)):
            if cancelled():
                raise Cancelled(f"cancelled before step {i - start + 1} of {len(timesteps) - start}")
            began = time.perf_counter()
            model_input = np.concatenate([latents, latents]) if guided else latents
            model_input = scheduler.scale_model_input(model_input, i)
            timestep = np.full((len(model_input), 1), timesteps[i], dtype=np.float32)
            prediction = self.unet(model_input, timestep, states)
            if guided:
                uncond, cond = np.split(prediction, 2)
                prediction = uncond + np.float32(request.guidance_scale) * (cond - uncond)
            latents = scheduler.step(prediction, i, latents)
            if keep is not None:  # outside the mask: the image's own latents, at the next step's noise level
                proper = scheduler.add_noise(kept, noise, i + 1) if i + 1 < len(timesteps) else kept
                latents = (keep * proper + (1 - keep) * latents).astype(np.float32)
            if on_step is not None:
                on_step(time.perf_counter() - began)
        if cancelled():
            raise Cancelled("cancelled before decoding")
        return self.vae_decoder(latents)


def to_uint8(images: np.ndarray) -> np.ndarray:
    """[0, 1] floats to bytes, rounding as diffusers' `numpy_to_pil` does."""
    return (np.clip(images, 0.0, 1.0) * 255).round().astype(np.uint8)


def to_output(images: np.ndarray, request: ImageRequest) -> np.ndarray:
    """The model's output: `generate`'s images as bytes; for inpainting, the image's own pixels outside the mask
    (diffusers' `apply_overlay`): latents blend at 1/8 resolution and the VAE never gives a picture back exactly,
    so without this an edit would blur and shift what it was told to keep."""
    output = to_uint8(images)
    if request.inpainting:
        output = np.where(repaint_mask(request.mask)[None, :, :, None], output, request.image[None])
    return output
