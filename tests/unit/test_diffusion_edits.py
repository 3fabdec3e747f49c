"""Image edits in the numpy pipeline with stand-in networks: strength and the start step, masks at latent
resolution, the inpainting blend, the kept pixels, the checks on edit inputs."""

import numpy as np
import pytest

from tests.unit.test_diffusion_pipeline import DDIM, Networks
from triton_models.contract import EDIT_STRENGTH, INPAINT_STRENGTH
from triton_models.diffusion.pipeline import (
    ImageRequest,
    Settings,
    StableDiffusion,
    edit_noise,
    initial_latents,
    latent_mask,
    repaint_mask,
    start_step,
    to_output,
)
from triton_models.diffusion.schedulers import make_scheduler

SIZE = 64  # pixels; 8 x 8 latents
SETTINGS = Settings(sizes=((SIZE, SIZE),), default_size=(SIZE, SIZE), default_steps=10, max_steps=20, edits=True)


class EditNetworks(Networks):
    """The stand-ins plus a VAE encoder; records what the decoder is given."""

    def __init__(self):
        super().__init__()
        self.encoded: list[np.ndarray] = []
        self.decoded: list[np.ndarray] = []

    def vae_encoder(self, images):
        self.encoded.append(images.copy())
        latents = images[:, ::8, ::8, :].transpose(0, 3, 1, 2)  # [B, 3, 8, 8]
        mean = np.concatenate([latents, latents[:, :1]], axis=1) * 2 - 1
        return np.concatenate([mean, np.full_like(mean, 0.1)], axis=1).astype(np.float32)

    def vae_decoder(self, latents):
        self.decoded.append(latents.copy())
        return super().vae_decoder(latents)


def make():
    networks = EditNetworks()
    pipeline = StableDiffusion(networks.tokenizer, networks.text_encoder, networks.unet, networks.vae_decoder,
                               DDIM, vae_scale_factor=8, vae_encoder=networks.vae_encoder)
    return networks, pipeline


def picture(seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)


def square_mask() -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), dtype=np.uint8)
    mask[16:40, 8:30] = 255
    return mask


def edit(**overrides) -> ImageRequest:
    values = {"prompt": "a red fox", "seed": 7, "n": 2, "height": SIZE, "width": SIZE, "steps": 10,
              "guidance_scale": 7.5, "image": picture(), "strength": 0.6, **overrides}
    return ImageRequest(**values)


@pytest.mark.parametrize(("steps", "strength", "start"), [
    (10, 1.0, 0), (10, 0.8, 2), (10, 0.6, 4), (10, 0.7, 3), (10, 0.1, 9), (4, 0.5, 2), (3, 0.34, 2),
    (10, 0.09, 10),  # int(0.9) = 0 steps: nothing to run (refused by Settings.check)
])
def test_start_step_is_diffusers_get_timesteps(steps, strength, start):
    assert start_step(steps, strength) == start == steps - min(int(steps * strength), steps)


def test_masks_binarise_at_half_and_sample_each_latent_cells_top_left_pixel():
    assert repaint_mask(np.array([0, 127, 128, 255], dtype=np.uint8)).tolist() == [False, False, True, True]
    mask = np.zeros((16, 24), dtype=np.uint8)
    mask[0, 8] = 255  # the top-left pixel of latent cell (0, 1)
    mask[9:16, 17:24] = 255  # all of cell (1, 2) but its top-left pixel
    cells = latent_mask(mask, 8)
    assert cells.shape == (1, 1, 2, 3) and cells.dtype == np.float32
    assert cells[0, 0].tolist() == [[0, 1, 0], [0, 0, 0]]


def test_edit_noise_starts_with_the_generation_noise():
    noise, posterior = edit_noise(5, 2, 4, 8, 8)
    assert np.array_equal(noise, initial_latents(5, 2, 4, 8, 8))
    assert posterior.shape == (1, 4, 8, 8) and not np.array_equal(posterior[0], noise[0])


def test_img2img_encodes_once_noises_to_the_start_step_and_runs_the_rest():
    networks, pipeline = make()
    request = edit()
    pipeline.generate(request)
    assert len(networks.encoded) == 1
    encoded = networks.encoded[0]
    assert encoded.shape == (1, SIZE, SIZE, 3) and encoded.dtype == np.float32
    assert np.allclose(encoded[0] * 255, request.image)  # [0, 1] floats of the picture
    assert [int(b[1][0, 0]) for b in networks.unet_batches] == [501, 401, 301, 201, 101, 1]  # 0.6 of 10 steps
    assert networks.unet_batches[0][0] == (4, 4, 8, 8)  # guidance: 2n

    # The first UNet input is the image's latents noised to timestep 501, as the scheduler noises them.
    noise, posterior = edit_noise(request.seed, 2, 4, 8, 8)
    mean, std = np.split(networks.vae_encoder(encoded), 2, axis=1)
    scheduler = make_scheduler(DDIM)
    scheduler.set_timesteps(10)
    expected = scheduler.add_noise(np.repeat(mean + std * posterior, 2, axis=0), noise, 4)
    networks2, pipeline2 = make()
    seen = []
    pipeline2.unet = lambda sample, t, states: (seen.append(sample.copy()), networks2.unet(sample, t, states))[1]
    pipeline2.generate(request)
    np.testing.assert_allclose(seen[0][:2], expected, rtol=1e-6)


def test_strength_changes_the_image_and_the_image_matters():
    _, pipeline = make()
    base = pipeline.generate(edit())
    assert not np.array_equal(base, pipeline.generate(edit(strength=0.9)))
    assert not np.array_equal(base, pipeline.generate(edit(image=picture(1))))
    assert np.array_equal(base, pipeline.generate(edit()))  # same seed, same images


def test_inpainting_keeps_the_images_latents_outside_the_mask():
    networks, pipeline = make()
    request = edit(mask=square_mask(), strength=0.7, n=1)
    pipeline.generate(request)
    _, posterior = edit_noise(request.seed, 1, 4, 8, 8)
    mean, std = np.split(networks.vae_encoder(networks.encoded[0]), 2, axis=1)
    kept = mean + std * posterior
    final = networks.decoded[-1]
    outside = latent_mask(request.mask, 8)[0, 0] == 0
    np.testing.assert_allclose(final[0][:, outside], kept[0][:, outside], rtol=1e-6)  # the last step: unnoised
    assert not np.allclose(final[0][:, ~outside], kept[0][:, ~outside])


def test_inpainting_at_strength_one_starts_the_mask_from_pure_noise():
    networks, pipeline = make()
    seen = []
    pipeline.unet = lambda sample, t, states: (seen.append(sample.copy()), networks.unet(sample, t, states))[1]
    request = edit(mask=square_mask(), strength=1.0, guidance_scale=1.0)
    pipeline.generate(request)
    noise, _ = edit_noise(request.seed, 2, 4, 8, 8)
    assert len(seen) == 10 and np.array_equal(seen[0], noise)  # DDIM's init_noise_sigma is 1


def test_to_output_keeps_every_pixel_outside_the_mask():
    _, pipeline = make()
    request = edit(mask=square_mask())
    output = to_output(pipeline.generate(request), request)
    assert output.shape == (2, SIZE, SIZE, 3) and output.dtype == np.uint8
    keep = request.mask < 128
    assert all(np.array_equal(image[keep], request.image[keep]) for image in output)
    assert all(not np.array_equal(image[~keep], request.image[~keep]) for image in output)
    whole = edit()  # no mask: everything is redrawn, nothing pasted back
    assert not np.array_equal(to_output(pipeline.generate(whole), whole)[0], whole.image)


def test_no_guidance_when_prompt_and_negative_prompt_agree():
    networks, pipeline = make()
    pipeline.generate(edit(prompt="", guidance_scale=7.5))  # a variation: both empty
    assert networks.texts == [[""]] and networks.unet_batches[0][0] == (2, 4, 8, 8)


def test_a_pipeline_without_encoder_refuses_edits():
    networks = Networks()
    pipeline = StableDiffusion(networks.tokenizer, networks.text_encoder, networks.unet, networks.vae_decoder,
                               DDIM, vae_scale_factor=8)
    with pytest.raises(ValueError, match="no VAE encoder"):
        pipeline.generate(edit())


def test_settings_read_edit_inputs_and_default_strength():
    image, mask = picture(), square_mask()
    values = {"prompt": "", "seed": 1, "image": image}
    request = SETTINGS.request(values.get)  # an edit may have no prompt (a variation)
    assert request.image is image and request.mask is None and request.strength == EDIT_STRENGTH
    assert SETTINGS.request({**values, "mask": mask}.get).strength == INPAINT_STRENGTH
    assert SETTINGS.request({**values, "strength": 0.25}.get).strength == 0.25
    assert Settings.from_parameters({"sizes": "64x64", "supports_edits": "true"}).edits
    assert not Settings.from_parameters({"sizes": "64x64"}).edits


@pytest.mark.parametrize(
    ("overrides", "param", "message"),
    [
        ({"image": np.zeros((32, 64, 3), np.uint8)}, "image", r"image must be uint8 \[64, 64, 3\]"),
        ({"image": np.zeros((64, 64, 3), np.float32)}, "image", "got float32"),
        ({"mask": np.zeros((64, 32), np.uint8)}, "mask", r"mask must be uint8 \[64, 64\]"),
        ({"image": None, "mask": np.zeros((64, 64), np.uint8)}, "mask", "a mask needs an image"),
        ({"strength": 0.0}, "strength", r"strength must be in \(0, 1\]"),
        ({"strength": 1.5}, "strength", r"strength must be in \(0, 1\]"),
        ({"strength": float("nan")}, "strength", "strength must be in"),
        ({"strength": 0.05}, "strength", "leaves no step to run; raise strength to at least 0.1"),
        ({"image": None, "prompt": " "}, "prompt", "prompt must not be empty"),
    ],
)
def test_settings_refuse_bad_edits(overrides, param, message):
    values = {"prompt": "x", "seed": 1, "image": picture(), **overrides}
    with pytest.raises(ValueError, match=message) as info:
        SETTINGS.request(values.get)
    assert info.value.param == param


def test_a_model_without_edits_refuses_an_image():
    settings = Settings(sizes=((SIZE, SIZE),), default_size=(SIZE, SIZE))
    with pytest.raises(ValueError, match="does not edit images") as info:
        settings.request({"prompt": "x", "seed": 1, "image": picture()}.get)
    assert info.value.param == "model"
