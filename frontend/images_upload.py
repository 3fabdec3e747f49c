"""Images uploaded to /v1/images/edits and /variations, checked and turned into the diffusion model's inputs.

The safety rules are chat images' (frontend/images_fetch.py): only the formats of contract.IMAGE_FORMATS are
opened, an image's size is read from its header and held to the pixel limits before any pixel is decoded,
and the byte and pixel limits are the same settings. Every refusal is a 400 naming the field.

Then OpenAI's semantics: a mask is a picture of the image's size whose fully transparent pixels (alpha 0) mark
where to edit; without one, the image's own fully transparent pixels do; an image without any is edited
whole. The model takes them as the pipeline does (triton_models/diffusion): the image as RGB at the output
size, the mask as 255 where to redraw, resized alike (Lanczos, as diffusers' image processor) and binarised.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from frontend.errors import InvalidRequest
from frontend.images_fetch import ERRORS, FORMATS, ImagePixelsExceeded, InvalidImage, image_pixels

Size = tuple[int, int]  # (width, height), OpenAI's "WxH" order


@dataclass(frozen=True)
class UploadLimits:
    max_bytes: int = 20 * 1024 * 1024  # one image
    max_pixels: int = 50_000_000  # one image
    max_request_pixels: int = 32_000_000  # the image and its mask together

    @classmethod
    def from_settings(cls, settings) -> UploadLimits:
        return cls(settings.image_max_bytes, settings.image_max_pixels, settings.image_max_request_pixels)


@dataclass(frozen=True, eq=False)
class EditImages:
    """What the model is sent: `image` uint8 [H, W, 3] at the output size; `mask` uint8 [H, W], 255 where to
    redraw, or None to redraw everything."""

    image: np.ndarray
    mask: np.ndarray | None


class Uploads:
    """An edit's image and optional mask, opened and checked; `size` is the image's own."""

    def __init__(self, image: bytes, mask: bytes | None, limits: UploadLimits):
        pixels = _pixels(image, "image", limits)
        if mask is not None:
            total = pixels + _pixels(mask, "mask", limits)
            if total > limits.max_request_pixels:
                raise ImagePixelsExceeded(f"the image and its mask have {total} pixels together, over the "
                                          f"{limits.max_request_pixels} pixel budget of one request", param="mask")
        self.image = _decoded(image, "image")
        self.mask = _decoded(mask, "mask") if mask is not None else None
        if self.mask is not None and self.mask.size != self.image.size:
            raise InvalidRequest("mask is {}x{} but image is {}x{}: they must be the same size".format(
                *self.mask.size, *self.image.size), param="mask", code="invalid_mask")

    @property
    def size(self) -> Size:
        return self.image.size

    def for_edit(self, size: Size) -> EditImages:
        """The image and its mask at the output `size` (the mask from the image's alpha when none was sent)."""
        if self.mask is not None:
            redraw = _transparent(self.mask, "mask")
            if redraw is None or not redraw.any():
                raise InvalidRequest("the mask has no fully transparent pixel, so nothing to edit: a mask marks the "
                                     "area to edit with alpha 0 (transparent), the rest opaque", param="mask",
                                     code="invalid_mask")
        else:
            redraw = _transparent(self.image, "image")
            redraw = redraw if redraw is not None and redraw.any() else None
        mask = None
        if redraw is not None:
            mask = _resized(Image.fromarray(redraw.astype(np.uint8) * 255), size, "mask")
            mask = np.where(np.asarray(mask) >= 128, 255, 0).astype(np.uint8)
            if not mask.any():
                raise InvalidRequest("the area to edit is too small to survive resizing to {}x{}".format(*size),
                                     param="mask", code="invalid_mask")
        return EditImages(self.rgb(size), mask)

    def rgb(self, size: Size) -> np.ndarray:
        """The image as uint8 [H, W, 3] at `size`; transparency dropped (the pixels' colours kept)."""
        try:
            rgb = self.image.convert("RGBA").convert("RGB") if _has_alpha(self.image) else self.image.convert("RGB")
        except ERRORS as exc:
            raise InvalidImage(f"the image cannot be converted to RGB: {exc}", param="image") from exc
        return np.asarray(_resized(rgb, size, "image"), dtype=np.uint8)


def _pixels(data: bytes, param: str, limits: UploadLimits) -> int:
    if not data:
        raise InvalidImage(f"{param} is an empty file", param=param)
    if len(data) > limits.max_bytes:
        raise InvalidImage(f"{param} is {len(data)} bytes, over the {limits.max_bytes} byte limit", param=param)
    try:
        return image_pixels(data, limits.max_pixels)  # the header only: format and pixel limit
    except InvalidRequest as exc:
        exc.param = param
        raise


def _decoded(data: bytes, param: str) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data), formats=FORMATS)
        image.load()  # GIF: the first frame
    except ERRORS as exc:
        raise InvalidImage(f"{param} cannot be decoded: {exc}", param=param) from exc
    return image


def _has_alpha(image: Image.Image) -> bool:
    return "A" in image.getbands() or "transparency" in image.info


def _transparent(image: Image.Image, param: str) -> np.ndarray | None:
    """bool [H, W]: the fully transparent pixels; None when the image has no alpha at all."""
    if not _has_alpha(image):
        if param == "mask":
            raise InvalidRequest("the mask has no alpha channel: a mask marks the area to edit with fully "
                                 "transparent pixels (a PNG with alpha)", param="mask", code="invalid_mask")
        return None
    try:
        return np.asarray(image.convert("RGBA"))[..., 3] == 0
    except ERRORS as exc:
        raise InvalidImage(f"{param}'s transparency cannot be read: {exc}", param=param) from exc


def _resized(image: Image.Image, size: Size, param: str) -> Image.Image:
    if image.size == size:
        return image
    try:
        return image.resize(size, Image.Resampling.LANCZOS)
    except ERRORS as exc:
        raise InvalidImage(f"{param} cannot be resized: {exc}", param=param) from exc
