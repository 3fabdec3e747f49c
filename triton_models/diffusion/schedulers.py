"""Diffusion schedulers in pure numpy, following diffusers' maths for the configs they save.

`make_scheduler(config)` takes a diffusers `scheduler_config.json` dict (with `_class_name`) and returns a
fresh scheduler; one per request, since multistep schedulers keep state between steps. Every scheduler is
driven by step index (not timestep value) through the same four members:

    timesteps = s.set_timesteps(steps)        # float64 array, what the UNet is given
    x = x * s.init_noise_sigma
    for i, t in enumerate(timesteps):
        eps = unet(s.scale_model_input(x, i), t)
        x = s.step(eps, i, x)

An edit (img2img) starts part-way, as diffusers' img2img and inpainting pipelines do: `x = s.add_noise(x0,
noise, start)` noises the image's latents to the level of step `start`, and the loop runs from there, still by
the schedule's own (global) indices; inpainting re-noises the kept latents to each next step the same way.

Deterministic samplers only: the request's seed fixes the initial latents and nothing else is random.
"""

from __future__ import annotations

import math

import numpy as np


class UnsupportedSchedulerError(ValueError):
    """The scheduler class or one of its options has no numpy implementation here."""


def _betas(config: dict) -> np.ndarray:
    n = int(config.get("num_train_timesteps", 1000))
    if config.get("trained_betas") is not None:
        return np.asarray(config["trained_betas"], dtype=np.float64)
    schedule = config.get("beta_schedule", "linear")
    start, end = float(config.get("beta_start", 0.0001)), float(config.get("beta_end", 0.02))
    if schedule == "linear":
        return np.linspace(start, end, n, dtype=np.float64)
    if schedule == "scaled_linear":
        return np.linspace(start**0.5, end**0.5, n, dtype=np.float64) ** 2
    if schedule == "squaredcos_cap_v2":
        def alpha_bar(t):
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

        return np.array([min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), 0.999) for i in range(n)])
    raise UnsupportedSchedulerError(f"beta_schedule {schedule!r} is not supported")


def _reject(config: dict, **unsupported) -> None:
    for key, default in unsupported.items():
        if config.get(key, default) != default:
            raise UnsupportedSchedulerError(f"{config.get('_class_name')}: {key}={config[key]!r} is not supported")


class _Discrete:
    """Shared state: the training noise schedule (alphas_cumprod) and the config."""

    def __init__(self, config: dict):
        _reject(config, rescale_betas_zero_snr=False, thresholding=False)
        self.config = config
        self.num_train_timesteps = int(config.get("num_train_timesteps", 1000))
        self.alphas_cumprod = np.cumprod(1.0 - _betas(config))
        self.prediction_type = config.get("prediction_type", "epsilon")
        self.steps_offset = int(config.get("steps_offset", 0))
        self.init_noise_sigma = 1.0
        self.num_inference_steps = 0
        self.timesteps = np.zeros(0)

    def _spaced(self, steps: int, default_spacing: str) -> np.ndarray:
        """Integer timesteps, descending, per `timestep_spacing` (DDIM's rules; PNDM reverses them)."""
        spacing = self.config.get("timestep_spacing", default_spacing)
        n = self.num_train_timesteps
        if spacing == "linspace":
            return np.linspace(0, n - 1, steps).round()[::-1].astype(np.int64)
        if spacing == "leading":
            return (np.arange(0, steps) * (n // steps)).round()[::-1].astype(np.int64) + self.steps_offset
        if spacing == "trailing":
            return np.round(np.arange(n, 0, -n / steps)).astype(np.int64) - 1
        raise UnsupportedSchedulerError(f"timestep_spacing {spacing!r} is not supported")

    def _check_steps(self, steps: int) -> None:
        if not 1 <= steps <= self.num_train_timesteps:
            raise ValueError(f"steps must be between 1 and {self.num_train_timesteps}, got {steps}")

    def scale_model_input(self, sample: np.ndarray, index: int) -> np.ndarray:
        return sample

    def add_noise(self, original: np.ndarray, noise: np.ndarray, index: int) -> np.ndarray:
        """`original` noised to the level of step `index` (DDPM's forward process, at that step's timestep)."""
        a = self.alphas_cumprod[int(self.timesteps[index])]
        return (a**0.5 * original + (1 - a) ** 0.5 * noise).astype(original.dtype)


class DDIMScheduler(_Discrete):
    """diffusers.DDIMScheduler with eta=0 (the pipelines' default)."""

    def __init__(self, config: dict):
        super().__init__(config)
        self.clip_sample = bool(config.get("clip_sample", True))
        self.clip_sample_range = float(config.get("clip_sample_range", 1.0))
        self.final_alpha_cumprod = 1.0 if config.get("set_alpha_to_one", True) else self.alphas_cumprod[0]

    def set_timesteps(self, steps: int) -> np.ndarray:
        self._check_steps(steps)
        self.num_inference_steps = steps
        self.timesteps = self._spaced(steps, "leading").astype(np.float64)
        return self.timesteps

    def step(self, model_output: np.ndarray, index: int, sample: np.ndarray) -> np.ndarray:
        t = int(self.timesteps[index])
        prev_t = t - self.num_train_timesteps // self.num_inference_steps
        a_t = self.alphas_cumprod[t]
        a_prev = self.alphas_cumprod[prev_t] if prev_t >= 0 else self.final_alpha_cumprod
        b_t = 1 - a_t
        if self.prediction_type == "epsilon":
            x0 = (sample - b_t**0.5 * model_output) / a_t**0.5
            eps = model_output
        elif self.prediction_type == "sample":
            x0 = model_output
            eps = (sample - a_t**0.5 * x0) / b_t**0.5
        elif self.prediction_type == "v_prediction":
            x0 = a_t**0.5 * sample - b_t**0.5 * model_output
            eps = a_t**0.5 * model_output + b_t**0.5 * sample
        else:
            raise UnsupportedSchedulerError(f"prediction_type {self.prediction_type!r} is not supported")
        if self.clip_sample:
            x0 = np.clip(x0, -self.clip_sample_range, self.clip_sample_range)
        return (a_prev**0.5 * x0 + (1 - a_prev) ** 0.5 * eps).astype(sample.dtype)


class PNDMScheduler(_Discrete):
    """diffusers.PNDMScheduler with skip_prk_steps=True (PLMS), as Stable Diffusion 1.x ships it."""

    def __init__(self, config: dict):
        super().__init__(config)
        if not config.get("skip_prk_steps", False):
            raise UnsupportedSchedulerError("PNDMScheduler: only skip_prk_steps=True (PLMS) is supported")
        self.final_alpha_cumprod = 1.0 if config.get("set_alpha_to_one", False) else self.alphas_cumprod[0]
        self.ets: list[np.ndarray] = []
        self.cur_sample: np.ndarray | None = None
        self.counter = 0

    def set_timesteps(self, steps: int) -> np.ndarray:
        self._check_steps(steps)
        self.num_inference_steps = steps
        ascending = self._spaced(steps, "leading")[::-1]
        # PLMS runs the first timestep twice (a second-order warm-up step).
        plms = np.concatenate([ascending[:-1], ascending[-2:-1], ascending[-1:]])[::-1]
        self.timesteps = plms.astype(np.float64)
        self.ets, self.cur_sample, self.counter = [], None, 0
        return self.timesteps

    def step(self, model_output: np.ndarray, index: int, sample: np.ndarray) -> np.ndarray:
        t = int(self.timesteps[index])
        delta = self.num_train_timesteps // self.num_inference_steps
        prev_t = t - delta
        if self.counter != 1:
            self.ets = self.ets[-3:]
            self.ets.append(model_output)
        else:
            prev_t, t = t, t + delta
        ets = self.ets
        if len(ets) == 1 and self.counter == 0:
            self.cur_sample = sample
        elif len(ets) == 1 and self.counter == 1:
            model_output = (model_output + ets[-1]) / 2
            sample, self.cur_sample = self.cur_sample, None
        elif len(ets) == 2:
            model_output = (3 * ets[-1] - ets[-2]) / 2
        elif len(ets) == 3:
            model_output = (23 * ets[-1] - 16 * ets[-2] + 5 * ets[-3]) / 12
        else:
            model_output = (55 * ets[-1] - 59 * ets[-2] + 37 * ets[-3] - 9 * ets[-4]) / 24
        self.counter += 1
        return self._prev_sample(sample, t, prev_t, model_output)

    def _prev_sample(self, sample, t, prev_t, model_output):
        a_t = self.alphas_cumprod[t]
        a_prev = self.alphas_cumprod[prev_t] if prev_t >= 0 else self.final_alpha_cumprod
        b_t, b_prev = 1 - a_t, 1 - a_prev
        if self.prediction_type == "v_prediction":
            model_output = a_t**0.5 * model_output + b_t**0.5 * sample
        elif self.prediction_type != "epsilon":
            raise UnsupportedSchedulerError(f"prediction_type {self.prediction_type!r} is not supported")
        denom = a_t * b_prev**0.5 + (a_t * b_t * a_prev) ** 0.5
        prev = (a_prev / a_t) ** 0.5 * sample - (a_prev - a_t) * model_output / denom
        return prev.astype(sample.dtype)


class EulerDiscreteScheduler(_Discrete):
    """diffusers.EulerDiscreteScheduler without churn (the pipelines' default), linear or Karras sigmas."""

    def __init__(self, config: dict):
        super().__init__(config)
        _reject(config, use_exponential_sigmas=False, use_beta_sigmas=False, timestep_type="discrete",
                interpolation_type="linear", final_sigmas_type="zero")
        self.sigmas = np.zeros(1)

    def set_timesteps(self, steps: int) -> np.ndarray:
        self._check_steps(steps)
        self.num_inference_steps = steps
        spacing = self.config.get("timestep_spacing", "linspace")
        n = self.num_train_timesteps
        if spacing == "linspace":
            timesteps = np.linspace(0, n - 1, steps, dtype=np.float32)[::-1].astype(np.float64)
        else:
            timesteps = self._spaced(steps, spacing).astype(np.float64)
        all_sigmas = ((1 - self.alphas_cumprod) / self.alphas_cumprod) ** 0.5
        sigmas = np.interp(timesteps, np.arange(n), all_sigmas)
        if self.config.get("use_karras_sigmas"):
            sigma_min = self.config.get("sigma_min") or sigmas[-1]
            sigma_max = self.config.get("sigma_max") or sigmas[0]
            ramp = np.linspace(0, 1, steps)
            rho = 7.0
            sigmas = (sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
            timesteps = np.array([_sigma_to_t(s, np.log(all_sigmas)) for s in sigmas])
        self.sigmas = np.concatenate([sigmas, [0.0]]).astype(np.float32).astype(np.float64)
        self.timesteps = timesteps.astype(np.float32).astype(np.float64)
        top = self.sigmas.max()
        self.init_noise_sigma = float(top if spacing in ("linspace", "trailing") else (top**2 + 1) ** 0.5)
        return self.timesteps

    def scale_model_input(self, sample: np.ndarray, index: int) -> np.ndarray:
        return (sample / (self.sigmas[index] ** 2 + 1) ** 0.5).astype(sample.dtype)

    def add_noise(self, original: np.ndarray, noise: np.ndarray, index: int) -> np.ndarray:
        return (original + noise * self.sigmas[index]).astype(original.dtype)

    def step(self, model_output: np.ndarray, index: int, sample: np.ndarray) -> np.ndarray:
        sigma = self.sigmas[index]
        if self.prediction_type in ("original_sample", "sample"):
            x0 = model_output
        elif self.prediction_type == "epsilon":
            x0 = sample - sigma * model_output
        elif self.prediction_type == "v_prediction":
            x0 = model_output * (-sigma / (sigma**2 + 1) ** 0.5) + sample / (sigma**2 + 1)
        else:
            raise UnsupportedSchedulerError(f"prediction_type {self.prediction_type!r} is not supported")
        derivative = (sample - x0) / sigma
        return (sample + derivative * (self.sigmas[index + 1] - sigma)).astype(sample.dtype)


class DPMSolverMultistepScheduler(_Discrete):
    """diffusers.DPMSolverMultistepScheduler, deterministic variants: DPM-Solver(++) of order 1 or 2 ("DPM++ 2M")."""

    def __init__(self, config: dict):
        super().__init__(config)
        _reject(config, use_exponential_sigmas=False, use_beta_sigmas=False, use_lu_lambdas=False,
                use_flow_sigmas=False, variance_type=None)
        self.algorithm = config.get("algorithm_type", "dpmsolver++")
        self.order = int(config.get("solver_order", 2))
        self.solver_type = config.get("solver_type", "midpoint")
        if self.algorithm not in ("dpmsolver++", "dpmsolver") or self.order not in (1, 2) \
                or self.solver_type not in ("midpoint", "heun"):
            raise UnsupportedSchedulerError(
                f"DPMSolverMultistepScheduler: {self.algorithm} order {self.order} {self.solver_type} is not "
                "supported (dpmsolver++ or dpmsolver, order 1 or 2, midpoint or heun)")
        if self.algorithm == "dpmsolver" and config.get("final_sigmas_type", "zero") == "zero":
            raise UnsupportedSchedulerError("DPMSolverMultistepScheduler: dpmsolver needs final_sigmas_type sigma_min")
        self.sigmas = np.zeros(1)
        self.outputs: list[np.ndarray] = []

    def set_timesteps(self, steps: int) -> np.ndarray:
        self._check_steps(steps)
        n = self.num_train_timesteps
        spacing = self.config.get("timestep_spacing", "linspace")
        lambdas = 0.5 * np.log(self.alphas_cumprod) - 0.5 * np.log(1 - self.alphas_cumprod)
        clipped = int(np.searchsorted(lambdas[::-1], float(self.config.get("lambda_min_clipped", -math.inf))))
        last = n - clipped
        if spacing == "linspace":
            timesteps = np.linspace(0, last - 1, steps + 1).round()[::-1][:-1].astype(np.int64)
        elif spacing == "leading":
            ratio = last // (steps + 1)
            timesteps = (np.arange(0, steps + 1) * ratio).round()[::-1][:-1].astype(np.int64) + self.steps_offset
        elif spacing == "trailing":
            timesteps = np.arange(last, 0, -n / steps).round().astype(np.int64) - 1
        else:
            raise UnsupportedSchedulerError(f"timestep_spacing {spacing!r} is not supported")
        all_sigmas = ((1 - self.alphas_cumprod) / self.alphas_cumprod) ** 0.5
        if self.config.get("use_karras_sigmas"):
            sigma_min = self.config.get("sigma_min") or all_sigmas[0]
            sigma_max = self.config.get("sigma_max") or all_sigmas[-1]
            rho, ramp = 7.0, np.linspace(0, 1, steps)
            sigmas = (sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
            timesteps = np.array([_sigma_to_t(s, np.log(all_sigmas)) for s in sigmas])
            if self.config.get("beta_schedule") != "squaredcos_cap_v2":
                timesteps = timesteps.round()
        else:
            sigmas = np.interp(timesteps, np.arange(n), all_sigmas)
        final = self.config.get("final_sigmas_type", "zero")
        if final not in ("zero", "sigma_min"):
            raise UnsupportedSchedulerError(f"final_sigmas_type {final!r} is not supported")
        last_sigma = all_sigmas[0] if final == "sigma_min" else 0.0
        self.sigmas = np.concatenate([sigmas, [last_sigma]]).astype(np.float32).astype(np.float64)
        self.timesteps = timesteps.astype(np.int64).astype(np.float64)
        self.num_inference_steps = len(self.timesteps)
        self.outputs = []
        return self.timesteps

    def add_noise(self, original: np.ndarray, noise: np.ndarray, index: int) -> np.ndarray:
        alpha, sigma, _ = self._alpha_sigma_lambda(self.sigmas[index])
        return (alpha * original + sigma * noise).astype(original.dtype)

    @staticmethod
    def _alpha_sigma_lambda(sigma: float) -> tuple[float, float, float]:
        alpha = 1 / (sigma**2 + 1) ** 0.5
        with np.errstate(divide="ignore"):  # sigma 0 at the end: lambda is +inf, exp(-h) is 0
            return alpha, sigma * alpha, float(np.log(alpha) - np.log(sigma * alpha))

    def step(self, model_output: np.ndarray, index: int, sample: np.ndarray) -> np.ndarray:
        sigma = self.sigmas[index]
        alpha_s, sigma_s, lambda_s = self._alpha_sigma_lambda(sigma)
        plus = self.algorithm == "dpmsolver++"
        if self.prediction_type == "epsilon":
            converted = (sample - sigma_s * model_output) / alpha_s if plus else model_output
        elif self.prediction_type == "v_prediction":
            converted = (alpha_s * sample - sigma_s * model_output if plus
                         else alpha_s * model_output + sigma_s * sample)
        elif self.prediction_type == "sample":
            converted = model_output if plus else (sample - alpha_s * model_output) / sigma_s
        else:
            raise UnsupportedSchedulerError(f"prediction_type {self.prediction_type!r} is not supported")
        self.outputs = [*self.outputs[-(self.order - 1):], converted] if self.order > 1 else [converted]

        steps = self.num_inference_steps
        final = index == steps - 1 and (
            self.config.get("euler_at_final", False)
            or (self.config.get("lower_order_final", True) and steps < 15)
            or self.config.get("final_sigmas_type", "zero") == "zero")
        alpha_t, sigma_t, lambda_t = self._alpha_sigma_lambda(self.sigmas[index + 1])
        h = lambda_t - lambda_s
        m0 = converted
        # First order until there is a previous output: the first step of the schedule, or of an edit that
        # starts part-way (diffusers counts `lower_order_nums` the same way).
        if self.order == 1 or len(self.outputs) < 2 or final:
            if plus:
                prev = (sigma_t / sigma_s) * sample - alpha_t * (np.exp(-h) - 1.0) * m0
            else:
                prev = (alpha_t / alpha_s) * sample - sigma_t * (np.exp(h) - 1.0) * m0
        else:
            _, _, lambda_s1 = self._alpha_sigma_lambda(self.sigmas[index - 1])
            r0 = (lambda_s - lambda_s1) / h
            d1 = (1.0 / r0) * (m0 - self.outputs[-2])
            if plus:
                e = np.exp(-h) - 1.0
                tail = -0.5 * alpha_t * e * d1 if self.solver_type == "midpoint" else alpha_t * (e / h + 1.0) * d1
                prev = (sigma_t / sigma_s) * sample - alpha_t * e * m0 + tail
            else:
                e = np.exp(h) - 1.0
                tail = 0.5 * sigma_t * e * d1 if self.solver_type == "midpoint" else sigma_t * (e / h - 1.0) * d1
                prev = (alpha_t / alpha_s) * sample - sigma_t * e * m0 - tail
        return prev.astype(sample.dtype)


def _sigma_to_t(sigma: float, log_sigmas: np.ndarray) -> float:
    log_sigma = np.log(max(sigma, 1e-10))
    dists = log_sigma - log_sigmas
    low = int(np.clip(np.cumsum(dists >= 0).argmax(), None, len(log_sigmas) - 2))
    w = np.clip((log_sigmas[low] - log_sigma) / (log_sigmas[low] - log_sigmas[low + 1]), 0, 1)
    return float((1 - w) * low + w * (low + 1))


SCHEDULERS = {cls.__name__: cls for cls in (DDIMScheduler, PNDMScheduler, EulerDiscreteScheduler,
                                             DPMSolverMultistepScheduler)}


def make_scheduler(config: dict):
    """A fresh scheduler for a diffusers scheduler config; UnsupportedSchedulerError if there is none."""
    name = config.get("_class_name")
    try:
        cls = SCHEDULERS[name]
    except KeyError:
        raise UnsupportedSchedulerError(
            f"scheduler {name!r} has no numpy implementation; supported: {', '.join(SCHEDULERS)}"
        ) from None
    return cls(config)
