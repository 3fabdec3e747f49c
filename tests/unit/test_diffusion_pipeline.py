"""The numpy Stable Diffusion pipeline with stand-in networks: settings, guidance, seeds, cancellation."""

import numpy as np
import pytest

from triton_models.diffusion.pipeline import (
    Cancelled,
    ImageRequest,
    Settings,
    StableDiffusion,
    initial_latents,
    to_uint8,
)

DDIM = {"_class_name": "DDIMScheduler", "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
        "clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1}
SETTINGS = Settings(sizes=((64, 64), (128, 64)), default_size=(64, 64), default_steps=5, default_guidance_scale=7.5,
                    max_n=4, max_steps=20)


class Networks:
    """Records what the pipeline feeds each network; outputs depend on the inputs so mix-ups show."""

    def __init__(self):
        self.texts: list[list[str]] = []
        self.unet_batches: list[tuple] = []

    def tokenizer(self, texts):
        self.texts.append(list(texts))
        return np.array([[len(t)] * 77 for t in texts], dtype=np.int64)

    def text_encoder(self, ids):
        return np.repeat(ids[:, :, None].astype(np.float32), 4, axis=2)

    def unet(self, sample, timestep, states):
        self.unet_batches.append((sample.shape, timestep.copy(), states[:, 0, 0].copy()))
        assert timestep.shape == (len(sample), 1) and timestep.dtype == np.float32
        return (0.1 * sample + 0.01 * states[:, 0, 0, None, None, None]).astype(np.float32)

    def vae_decoder(self, latents):
        image = np.repeat(np.repeat(latents[:, :3].transpose(0, 2, 3, 1), 8, axis=1), 8, axis=2)
        return np.clip(image / 4 + 0.5, 0, 1).astype(np.float32)


def make(networks=None):
    networks = networks or Networks()
    return networks, StableDiffusion(networks.tokenizer, networks.text_encoder, networks.unet, networks.vae_decoder,
                                     DDIM, vae_scale_factor=8)


def request(**overrides):
    values = {"prompt": "a red fox", "seed": 7, "n": 2, "height": 64, "width": 64, "steps": 5,
              "guidance_scale": 7.5, **overrides}
    return ImageRequest(**values)


def test_classifier_free_guidance_runs_negative_then_prompt_n_times():
    networks, pipeline = make()
    images = pipeline.generate(request(negative_prompt="blurry"))
    assert images.shape == (2, 64, 64, 3) and images.dtype == np.float32
    assert networks.texts == [["blurry", "a red fox"]]
    assert len(networks.unet_batches) == 5
    shape, _, states = networks.unet_batches[0]
    assert shape == (4, 4, 8, 8)  # 2n: unconditional half first
    assert states.tolist() == [6, 6, 9, 9]  # len("blurry") x n, len("a red fox") x n
    assert [int(b[1][0, 0]) for b in networks.unet_batches] == [801, 601, 401, 201, 1]


def test_no_guidance_at_scale_one_or_below():
    networks, pipeline = make()
    pipeline.generate(request(guidance_scale=1.0, n=1))
    assert networks.texts == [["a red fox"]]
    assert networks.unet_batches[0][0] == (1, 4, 8, 8)


def test_guidance_scale_changes_the_result():
    _, pipeline = make()
    assert not np.array_equal(pipeline.generate(request(guidance_scale=2.0)), pipeline.generate(request()))


def test_same_seed_same_images_and_n_images_differ():
    _, pipeline = make()
    first, second = pipeline.generate(request()), pipeline.generate(request())
    assert np.array_equal(first, second)
    assert not np.array_equal(first[0], first[1])
    assert not np.array_equal(first, pipeline.generate(request(seed=8)))


def test_initial_latents_are_numpy_pcg64():
    latents = initial_latents(3, 2, 4, 8, 6)
    assert latents.shape == (2, 4, 8, 6) and latents.dtype == np.float32
    expected = np.random.default_rng(3).standard_normal((2, 4, 8, 6), dtype=np.float32)
    assert np.array_equal(latents, expected)


def test_cancellation_stops_between_steps():
    networks, pipeline = make()
    calls = iter([False, False, True])
    with pytest.raises(Cancelled, match="before step 3 of 5"):
        pipeline.generate(request(), cancelled=lambda: next(calls))
    assert len(networks.unet_batches) == 2


def test_size_must_fit_the_vae():
    _, pipeline = make()
    with pytest.raises(ValueError, match="multiples of 8"):
        pipeline.generate(request(height=60))


def test_to_uint8_rounds_like_diffusers():
    values = np.array([0.0, 0.5, 1 / 255 * 0.49, 1 / 255 * 0.51, 1.0, 1.2, -0.1], dtype=np.float32)
    assert to_uint8(values).tolist() == [0, 128, 0, 1, 255, 255, 0]


def test_settings_from_parameters():
    settings = Settings.from_parameters({"sizes": "64x64, 256x128", "default_size": "256x128", "default_steps": "12",
                                         "default_guidance_scale": "0.0", "max_n": "3", "max_steps": "40"})
    assert settings.sizes == ((64, 64), (256, 128))
    assert (settings.default_size, settings.default_steps, settings.default_guidance_scale) == ((256, 128), 12, 0.0)
    assert (settings.max_n, settings.max_steps) == (3, 40)


def test_settings_fill_defaults():
    values = {"prompt": "hi", "seed": 5}
    r = SETTINGS.request(values.get)
    assert (r.width, r.height, r.n, r.steps, r.guidance_scale, r.negative_prompt) == (64, 64, 1, 5, 7.5, "")
    r = SETTINGS.request({**values, "width": 128, "height": 64, "n": 4}.get)
    assert (r.width, r.height, r.n) == (128, 64, 4)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"prompt": "  "}, "prompt must not be empty"),
        ({"prompt": "x" * 4001}, "longer than 4000"),
        ({"width": 64, "height": 128}, r"size 64x128 is not supported; use one of 64x64, 128x64"),
        ({"n": 0}, "n must be between 1 and 4"),
        ({"n": 5}, "n must be between 1 and 4"),
        ({"steps": 21}, "steps must be between 1 and 20"),
        ({"guidance_scale": float("nan")}, "guidance_scale"),
        ({"guidance_scale": -1.0}, "guidance_scale"),
        ({"seed": -1}, "seed must be"),
        ({"seed": None}, "seed must be"),
    ],
)
def test_settings_refuse(overrides, message):
    values = {"prompt": "hi", "seed": 5, **overrides}
    with pytest.raises(ValueError, match=message):
        SETTINGS.request(values.get)


def test_bad_sizes_parameter():
    with pytest.raises(ValueError, match="not WxH"):
        Settings.parse_sizes("64x64,128")
