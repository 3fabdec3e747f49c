"""The numpy schedulers against diffusers' own, driven by the same model outputs."""

import numpy as np
import pytest

diffusers = pytest.importorskip("diffusers")
torch = pytest.importorskip("torch")

from triton_models.diffusion.schedulers import (
    UnsupportedSchedulerError,
    make_scheduler,
)

SD = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000}

CASES = [
    ("DDIMScheduler", {**SD, "clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1}),
    ("DDIMScheduler", {**SD, "clip_sample": False, "prediction_type": "v_prediction",
                       "timestep_spacing": "trailing"}),
    ("DDIMScheduler", {"beta_schedule": "linear", "clip_sample": True}),
    ("DDIMScheduler", {"beta_schedule": "squaredcos_cap_v2", "timestep_spacing": "linspace", "clip_sample": False}),
    ("PNDMScheduler", {**SD, "skip_prk_steps": True, "set_alpha_to_one": False, "steps_offset": 1}),
    ("PNDMScheduler", {**SD, "skip_prk_steps": True, "timestep_spacing": "trailing",
                       "prediction_type": "v_prediction"}),
    ("EulerDiscreteScheduler", {**SD, "timestep_spacing": "trailing"}),  # sd-turbo
    ("EulerDiscreteScheduler", {**SD, "steps_offset": 1, "timestep_spacing": "leading"}),
    ("EulerDiscreteScheduler", {**SD}),
    ("EulerDiscreteScheduler", {**SD, "use_karras_sigmas": True, "prediction_type": "v_prediction"}),
    ("DPMSolverMultistepScheduler", {**SD}),  # "DPM++ 2M"
    ("DPMSolverMultistepScheduler", {**SD, "use_karras_sigmas": True, "steps_offset": 1}),
    ("DPMSolverMultistepScheduler", {**SD, "algorithm_type": "dpmsolver", "solver_type": "heun",
                                     "timestep_spacing": "leading", "steps_offset": 1,
                                     "final_sigmas_type": "sigma_min"}),
    ("DPMSolverMultistepScheduler", {**SD, "solver_type": "heun", "prediction_type": "v_prediction",
                                     "timestep_spacing": "trailing", "lower_order_final": False,
                                     "final_sigmas_type": "sigma_min"}),
    ("DPMSolverMultistepScheduler", {**SD, "solver_order": 1, "lambda_min_clipped": -5.1}),
]


def fake_model(x, t):
    """A smooth, timestep-dependent stand-in for a UNet, the same for both implementations."""
    return np.tanh(x * 0.7 + np.float32(t) / 1000.0).astype(np.float32)


@pytest.mark.parametrize("steps", [1, 4, 10, 25])
@pytest.mark.parametrize(("name", "options"), CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_matches_diffusers(name, options, steps):
    reference = getattr(diffusers, name)(**options)
    ours = make_scheduler({"_class_name": name, **dict(reference.config)})

    reference.set_timesteps(steps)
    timesteps = ours.set_timesteps(steps)
    np.testing.assert_allclose(timesteps, reference.timesteps.numpy().astype(np.float64), rtol=1e-4, atol=1e-3)
    assert ours.init_noise_sigma == pytest.approx(float(reference.init_noise_sigma), rel=1e-4)

    x0 = np.random.default_rng(0).standard_normal((2, 4, 8, 8)).astype(np.float32)
    ref_x = torch.from_numpy(x0) * reference.init_noise_sigma
    our_x = x0 * np.float32(ours.init_noise_sigma)
    for i, t in enumerate(reference.timesteps):
        ref_in = reference.scale_model_input(ref_x, t)
        our_in = ours.scale_model_input(our_x, i)
        np.testing.assert_allclose(our_in, ref_in.numpy(), rtol=1e-4, atol=1e-4)
        ref_x = reference.step(torch.from_numpy(fake_model(ref_in.numpy(), float(t))), t, ref_x).prev_sample
        our_x = ours.step(fake_model(our_in, float(timesteps[i])), i, our_x)
        assert our_x.dtype == np.float32
    np.testing.assert_allclose(our_x, ref_x.numpy(), rtol=1e-4, atol=1e-4)


def test_unknown_scheduler_is_refused():
    with pytest.raises(UnsupportedSchedulerError, match="supported: DDIMScheduler"):
        make_scheduler({"_class_name": "LCMScheduler"})


@pytest.mark.parametrize(
    "config",
    [
        {"_class_name": "PNDMScheduler", "skip_prk_steps": False},
        {"_class_name": "DDIMScheduler", "rescale_betas_zero_snr": True},
        {"_class_name": "EulerDiscreteScheduler", "use_exponential_sigmas": True},
        {"_class_name": "DDIMScheduler", "beta_schedule": "sigmoid"},
        {"_class_name": "DPMSolverMultistepScheduler", "solver_order": 3},
        {"_class_name": "DPMSolverMultistepScheduler", "algorithm_type": "sde-dpmsolver++"},
    ],
)
def test_unsupported_options_are_refused(config):
    with pytest.raises(UnsupportedSchedulerError):
        make_scheduler(config)


def test_steps_out_of_range():
    scheduler = make_scheduler({"_class_name": "DDIMScheduler", "num_train_timesteps": 10})
    with pytest.raises(ValueError, match="between 1 and 10"):
        scheduler.set_timesteps(11)


@pytest.mark.parametrize(("steps", "strength"), [(4, 0.5), (10, 0.8), (10, 0.3), (25, 0.6)])
@pytest.mark.parametrize(("name", "options"), CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_edits_match_diffusers(name, options, steps, strength):
    """img2img and inpainting drive a scheduler as diffusers' pipelines do: noise the image's latents to the
    start step, run the rest of the schedule, and re-noise the kept latents to each next step."""
    from triton_models.diffusion.pipeline import start_step

    reference = getattr(diffusers, name)(**options)
    ours = make_scheduler({"_class_name": name, **dict(reference.config)})
    reference.set_timesteps(steps)
    timesteps = ours.set_timesteps(steps)
    start = start_step(steps, strength)
    assert start == steps - min(int(steps * strength), steps)  # diffusers' get_timesteps (order 1)
    if hasattr(reference, "set_begin_index"):
        reference.set_begin_index(start)

    rng = np.random.default_rng(1)
    x0, noise = (rng.standard_normal((2, 4, 8, 8)).astype(np.float32) for _ in range(2))
    ref_x = reference.add_noise(torch.from_numpy(x0), torch.from_numpy(noise), reference.timesteps[start:start + 1])
    our_x = ours.add_noise(x0, noise, start)
    np.testing.assert_allclose(our_x, ref_x.numpy(), rtol=1e-4, atol=1e-4)
    for i in range(start, len(timesteps)):
        t = reference.timesteps[i]
        ref_in = reference.scale_model_input(ref_x, t)
        our_in = ours.scale_model_input(our_x, i)
        ref_x = reference.step(torch.from_numpy(fake_model(ref_in.numpy(), float(t))), t, ref_x).prev_sample
        our_x = ours.step(fake_model(our_in, float(timesteps[i])), i, our_x)
        if i + 1 < len(timesteps):  # inpainting's kept latents, at the next step's noise level
            kept = reference.add_noise(torch.from_numpy(x0), torch.from_numpy(noise),
                                       reference.timesteps[i + 1:i + 2])
            np.testing.assert_allclose(ours.add_noise(x0, noise, i + 1), kept.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(our_x, ref_x.numpy(), rtol=1e-4, atol=1e-4)
