"""Images as the model's HF image processor prepares them: decode, RGB, (pad), resize, crop, rescale, normalise.

Reproduces transformers' PIL-backend CLIP and LLaVA image processors from `preprocessor_config.json`
(tests/unit/test_llava_preprocess.py compares against them), without importing transformers at serve time.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from triton_models.contract import IMAGE_FORMATS

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
MAX_IMAGE_PIXELS = 50_000_000  # decompression-bomb guard (Pillow's own default warns at 89 M)


class InvalidImage(ValueError):
    """The bytes are not an image this server can decode (the message says why)."""


def decode_base64_image(data: bytes | str, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """An image from base64 text (a `data:` URI prefix is tolerated, as the vLLM backend does)."""
    if isinstance(data, bytes):
        data = data.decode("ascii", errors="replace")
    if data.startswith("data:"):
        data = data.partition(",")[2]
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidImage(f"the image is not valid base64: {exc}") from exc
    return decode_image(raw, max_pixels)


def decode_image(raw: bytes, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Decode and fully load an image of one of IMAGE_FORMATS, refusing oversized ones before their pixels
    are decoded (the size comes from the header; no other decoder of Pillow's is ever tried)."""
    try:
        image = Image.open(io.BytesIO(raw), formats=IMAGE_FORMATS)
        if image.width * image.height > max_pixels:
            raise InvalidImage(f"the image has {image.width}x{image.height} pixels, over {max_pixels}")
        image.load()
    except InvalidImage:
        raise
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        # Pillow's own words name internals (`<_io.BytesIO object at 0x7f...>`): the client hears what to send
        raise InvalidImage(f"the image cannot be decoded; send one of {', '.join(IMAGE_FORMATS)}") from exc
    return image


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB, transparency composited onto white (transformers' `convert_to_rgb`)."""
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, image).convert("RGB")
    return image.convert("RGB")


@dataclass(frozen=True)
class ImageProcessor:
    """The settings of a CLIPImageProcessor / LlavaImageProcessor (`preprocessor_config.json` keys)."""

    size: dict
    crop_size: dict
    do_resize: bool = True
    do_center_crop: bool = True
    do_rescale: bool = True
    do_normalize: bool = True
    do_convert_rgb: bool = True
    do_pad: bool = False
    rescale_factor: float = 1 / 255
    image_mean: tuple[float, ...] = OPENAI_CLIP_MEAN
    image_std: tuple[float, ...] = OPENAI_CLIP_STD
    resample: int = Image.Resampling.BICUBIC

    @classmethod
    def from_dict(cls, config: dict) -> ImageProcessor:
        crop = config.get("crop_size") or {}
        if isinstance(crop, int):
            crop = {"height": crop, "width": crop}
        size = config.get("size") or {"shortest_edge": 224}
        if isinstance(size, int):
            size = {"shortest_edge": size}
        keys = ("do_resize", "do_center_crop", "do_rescale", "do_normalize", "do_convert_rgb", "do_pad",
                "rescale_factor", "resample")
        values = {k: config[k] for k in keys if config.get(k) is not None}
        for k in ("image_mean", "image_std"):
            if config.get(k) is not None:
                values[k] = tuple(float(v) for v in config[k])
        return cls(size=dict(size), crop_size=dict(crop), **values)

    @classmethod
    def from_folder(cls, folder: Path) -> ImageProcessor:
        """From `preprocessor_config.json`, or the `image_processor` of `processor_config.json` (transformers 5)."""
        folder = Path(folder)
        if (folder / "preprocessor_config.json").exists():
            return cls.from_dict(json.loads((folder / "preprocessor_config.json").read_text()))
        config = json.loads((folder / "processor_config.json").read_text())
        return cls.from_dict(config.get("image_processor", config))

    @property
    def output_size(self) -> tuple[int, int]:
        """(height, width) of the pixel values."""
        if self.do_center_crop:
            return self.crop_size["height"], self.crop_size["width"]
        if "height" in self.size:
            return self.size["height"], self.size["width"]
        raise ValueError("shortest_edge resizing without a center crop gives no fixed size")

    def __call__(self, image: Image.Image) -> np.ndarray:
        """float32 pixel values [3, height, width]."""
        array = np.asarray(to_rgb(image) if self.do_convert_rgb else image, dtype=np.uint8)
        if self.do_pad:
            array = self._pad_to_square(array)
        if self.do_resize:
            array = self._resize(array)
        array = array.transpose(2, 0, 1)  # channels first from here on, as the HF backend works
        if self.do_center_crop:
            array = _center_crop(array, self.output_size)
        if self.do_rescale:
            array = (array.astype(np.float64) * self.rescale_factor).astype(np.float32)
        if self.do_normalize:
            array = array.astype(np.float32, copy=False)
            mean = np.asarray(self.image_mean, np.float32).reshape(-1, 1, 1)
            std = np.asarray(self.image_std, np.float32).reshape(-1, 1, 1)
            array = (array - mean) / std
        return np.ascontiguousarray(array, dtype=np.float32)

    def _pad_to_square(self, array: np.ndarray) -> np.ndarray:
        height, width, _ = array.shape
        if height == width:
            return array
        side = max(height, width)
        color = [int(m * 255) for m in self.image_mean] if self.image_mean else [0, 0, 0]
        out = np.empty((side, side, 3), array.dtype)
        out[...] = np.asarray(color, array.dtype)
        top, left = (side - height) // 2, (side - width) // 2
        out[top:top + height, left:left + width] = array
        return out

    def _resize(self, array: np.ndarray) -> np.ndarray:
        height, width, _ = array.shape
        if "shortest_edge" in self.size:
            short_side = self.size["shortest_edge"]
            short, long = (width, height) if width <= height else (height, width)
            new_short, new_long = short_side, int(short_side * long / short)
            new_h, new_w = (new_long, new_short) if width <= height else (new_short, new_long)
        else:
            new_h, new_w = self.size["height"], self.size["width"]
        resized = Image.fromarray(array).resize((new_w, new_h), resample=self.resample)
        return np.asarray(resized)


def _center_crop(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """transformers' `center_crop` on [C, H, W]: crop, zero-padding an image smaller than the crop."""
    _, height, width = array.shape
    crop_h, crop_w = size
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    if top >= 0 and left >= 0:
        return array[:, top:top + crop_h, left:left + crop_w]
    new_h, new_w = max(crop_h, height), max(crop_w, width)
    padded = np.zeros((array.shape[0], new_h, new_w), array.dtype)
    top_pad, left_pad = -(-(new_h - height) // 2), -(-(new_w - width) // 2)
    padded[:, top_pad:top_pad + height, left_pad:left_pad + width] = array
    top, left = top + top_pad, left + left_pad
    return padded[:, max(0, top):min(new_h, top + crop_h), max(0, left):min(new_w, left + crop_w)]
