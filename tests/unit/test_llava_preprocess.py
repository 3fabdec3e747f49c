"""Serving-side image preprocessing vs transformers' own image processors (PIL backend), and image decoding."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image
from transformers import CLIPImageProcessorPil, LlavaImageProcessorPil

from triton_models.llava.preprocess import ImageProcessor, InvalidImage, decode_base64_image, decode_image

RNG = np.random.default_rng(0)


def noise(width: int, height: int, mode: str = "RGB") -> Image.Image:
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    pixels = RNG.integers(0, 256, (height, width, channels), dtype=np.uint8)
    return Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode)


def encoded(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


IMAGES = {
    "landscape": noise(97, 61),
    "portrait": noise(40, 130),
    "square": noise(50, 50),
    "smaller than the crop": noise(9, 13),
    "rgba": noise(70, 45, "RGBA"),
    "grayscale": noise(33, 77, "L"),
    "palette": noise(64, 48).convert("P"),
}
CONFIGS = {
    "clip 336 (llava-1.5)": (CLIPImageProcessorPil, {"size": {"shortest_edge": 336},
                                                     "crop_size": {"height": 336, "width": 336}}),
    "clip 32 (tiny)": (CLIPImageProcessorPil, {"size": {"shortest_edge": 32}, "crop_size": {"height": 32, "width": 32}}),
    "llava padded to square": (LlavaImageProcessorPil, {"do_pad": True, "size": {"shortest_edge": 48},
                                                        "crop_size": {"height": 48, "width": 48}}),
    "fixed size, no crop": (CLIPImageProcessorPil, {"size": {"height": 40, "width": 24}, "do_center_crop": False}),
}


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("image", IMAGES)
def test_matches_the_hf_image_processor(config, image):
    cls, kwargs = CONFIGS[config]
    hf = cls(**kwargs)
    expected = hf(images=[IMAGES[image]], return_tensors="np")["pixel_values"][0]
    ours = ImageProcessor.from_dict(hf.to_dict())(IMAGES[image])
    assert ours.shape == expected.shape and ours.dtype == np.float32
    np.testing.assert_allclose(ours, expected, atol=1e-6, rtol=0)


def test_output_size_and_settings_from_a_saved_processor(tmp_path):
    hf = LlavaImageProcessorPil(do_pad=True, size={"shortest_edge": 48}, crop_size={"height": 48, "width": 48})
    hf.save_pretrained(tmp_path)
    processor = ImageProcessor.from_folder(tmp_path)
    assert processor.do_pad and processor.output_size == (48, 48)


def test_transformers_5_processor_config(tmp_path):
    (tmp_path / "processor_config.json").write_text(json.dumps({"image_processor": {
        "size": {"shortest_edge": 20}, "crop_size": {"height": 20, "width": 20}, "image_mean": [0.5, 0.5, 0.5]}}))
    processor = ImageProcessor.from_folder(tmp_path)
    assert processor.output_size == (20, 20) and processor.image_mean == (0.5, 0.5, 0.5)


def test_llava_1_5_preprocessor_config_keys():
    # as in llava-hf/llava-1.5-7b-hf's preprocessor_config.json (ints for size and crop_size in older files)
    processor = ImageProcessor.from_dict({"crop_size": 336, "size": 336, "resample": 3, "do_center_crop": True})
    assert processor.output_size == (336, 336) and processor.size == {"shortest_edge": 336}


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF", "BMP"])
def test_decodes_common_formats(fmt):
    image = decode_base64_image(base64.b64encode(encoded(noise(20, 10), fmt)))
    assert image.size == (20, 10)


def test_a_data_uri_prefix_is_tolerated():
    data = b"data:image/png;base64," + base64.b64encode(encoded(noise(5, 6)))
    assert decode_base64_image(data).size == (5, 6)


@pytest.mark.parametrize(("data", "message"), [
    (base64.b64encode(b"hello, not an image"), "cannot be decoded"),
    (base64.b64encode(encoded(noise(30, 30))[:60]), "cannot be decoded"),  # truncated PNG
    (b"***", "not valid base64"),
])
def test_undecodable_images_are_refused(data, message):
    with pytest.raises(InvalidImage, match=message) as caught:
        decode_base64_image(data)
    assert "BytesIO" not in str(caught.value) and " at 0x" not in str(caught.value)  # Pillow's reprs stay in


@pytest.mark.parametrize("fmt", ["TIFF", "PPM", "ICO", "TGA"])
def test_formats_outside_the_contract_are_never_opened(fmt):
    # Pillow decodes these well; the model refuses them all the same (EPS would run Ghostscript).
    with pytest.raises(InvalidImage, match="send one of PNG, JPEG, WEBP, GIF, BMP"):
        decode_image(encoded(noise(8, 8), fmt))


def test_eps_is_never_opened():
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n"
    with pytest.raises(InvalidImage, match="cannot be decoded"):
        decode_image(eps)


def test_too_many_pixels_are_refused_before_decoding():
    with pytest.raises(InvalidImage, match="100x100 pixels, over 5000"):
        decode_image(encoded(noise(100, 100)), max_pixels=5000)
