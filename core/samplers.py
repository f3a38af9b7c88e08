"""Samplers: DDPM, DDIM and DPM-Solver++(2M), one signature, one registry.

Every sampler is `sample_<name>(model, x, timesteps, *, generator=None, callback=None, **settings)`:
  model      a `Denoiser`: eps and x0 prediction (guidance, precision, NFE count, cancellation inside)
  x          (B, C, H, W) float32 noise at t = timesteps[0]
  timesteps  strictly decreasing schedule indices, T ... 0 (`schedule.sampling_timesteps`)
  callback   called after every step with {"i", "t", "s", "x", "denoised"}
Notation: ab = alpha_bar; alpha_t = sqrt(ab_t), sigma_t = sqrt(1 - ab_t), lambda_t = log(alpha_t / sigma_t).
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from .device import autocast, synchronize
from .schedule import Schedule, sampling_timesteps


class SamplingCancelled(Exception):
    """Raised between model calls when the caller's cancel flag is set."""


class Denoiser:
    """Turns a ContextUnet into eps / x0 predictions for one batch of contexts.

    Classifier-free guidance (Ho & Salimans 2022): eps = eps_u + g * (eps_c - eps_u), where eps_u
    uses the all-zero context that training's 10% context dropout taught. g = 1 is the plain
    conditional model (one pass); any other g runs both passes as one batch of 2B.
    """

    def __init__(self, net, schedule: Schedule, context: torch.Tensor | None = None, *, guidance: float = 1.0,
                 precision: str = "fp32", cancel: threading.Event | Callable[[], bool] | None = None,
                 clip_x0: bool = False):
        self.net, self.schedule = net, schedule
        self.device = next(net.parameters()).device
        self.context, self.guidance, self.precision = context, float(guidance), precision
        self.clip_x0 = clip_x0
        self._cancelled = cancel.is_set if isinstance(cancel, threading.Event) else (cancel or (lambda: False))
        self.ab = schedule.ab_t.tolist()  # python floats: step coefficients never touch the device
        # t/T for every index, on the device once, so no per-step host-to-device copy.
        self._t_frac = torch.arange(schedule.T + 1, device=self.device, dtype=torch.float32) / schedule.T
        self.nfe = 0  # model evaluations per image (2 per step with guidance)

    @property
    def guided(self) -> bool:
        return self.context is not None and self.guidance != 1.0

    def predict(self, x: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (eps, x0) at integer step t; x0 clipped to [-1, 1] when clip_x0 (eps re-derived)."""
        if self._cancelled():
            raise SamplingCancelled()
        eps = self._eps(x, t)
        ab = self.ab[t]
        x0 = (x - math.sqrt(1 - ab) * eps) / math.sqrt(ab)
        if self.clip_x0:
            x0 = x0.clamp(-1, 1)
            eps = (x - math.sqrt(ab) * x0) / math.sqrt(1 - ab) if ab < 1 else eps
        return eps, x0

    def _eps(self, x: torch.Tensor, t: int) -> torch.Tensor:
        tt = self._t_frac[t:t + 1]  # (1,) broadcast over the batch
        c = self.context
        with autocast(self.device, self.precision):
            if not self.guided:
                self.nfe += 1
                return self.net(x, tt, c).float()
            self.nfe += 2
            out = self.net(torch.cat([x, x]), tt, torch.cat([c, torch.zeros_like(c)])).float()
        eps_c, eps_u = out.chunk(2)
        return eps_u + self.guidance * (eps_c - eps_u)


def _pairs(timesteps: list[int]):
    return list(zip(timesteps[:-1], timesteps[1:]))


def sample_ddpm(model: Denoiser, x, timesteps, *, generator=None, callback=None):
    """DDPM ancestral sampling (Ho et al. 2020, Alg. 2), sigma_t^2 = beta_t as in the course."""
    ab = model.ab
    a_t = model.schedule.a_t.tolist()
    for i, (t, s) in enumerate(_pairs(timesteps)):
        eps, x0 = model.predict(x, t)  # 1. predict the noise
        # 2. alpha of this hop; for consecutive steps the course's a_t[t] exactly (ab_t[0] is forced to 1,
        #    so ab[1]/ab[0] differs from a_t[1] by beta_0 = 1e-4).
        alpha = a_t[t] if s == t - 1 else ab[t] / ab[s]
        # 3. posterior mean: (x_t - (1 - alpha) / sqrt(1 - ab_t) * eps) / sqrt(alpha)
        x = (x - (1 - alpha) / math.sqrt(1 - ab[t]) * eps) / math.sqrt(alpha)
        if s > 0:  # 4. add noise of variance beta, except on the last step (the course's z = 0 at t = 1)
            x = x + math.sqrt(1 - alpha) * torch.randn(x.shape, generator=generator, device=x.device)
        if callback:
            callback({"i": i, "t": t, "s": s, "x": x, "denoised": x0})
    return x


def sample_ddim(model: Denoiser, x, timesteps, *, eta: float = 0.0, generator=None, callback=None):
    """DDIM (Song et al. 2021, eq. 12): eta = 0 deterministic, eta = 1 ancestral like DDPM."""
    ab = model.ab
    for i, (t, s) in enumerate(_pairs(timesteps)):
        eps, x0 = model.predict(x, t)  # 1. predict noise and clean image
        # 2. the noise this step re-injects: sigma = eta * sqrt((1-ab_s)/(1-ab_t)) * sqrt(1 - ab_t/ab_s)
        sigma = eta * math.sqrt((1 - ab[s]) / (1 - ab[t]) * (1 - ab[t] / ab[s]))
        # 3. x_s = sqrt(ab_s) x0 + sqrt(1 - ab_s - sigma^2) eps  (+ sigma z)
        x = math.sqrt(ab[s]) * x0 + math.sqrt(max(1 - ab[s] - sigma**2, 0.0)) * eps
        if sigma > 0:
            x = x + sigma * torch.randn(x.shape, generator=generator, device=x.device)
        if callback:
            callback({"i": i, "t": t, "s": s, "x": x, "denoised": x0})
    return x


def sample_dpmpp_2m(model: Denoiser, x, timesteps, *, generator=None, callback=None):
    """DPM-Solver++(2M) (Lu et al. 2022, Alg. 2): multistep second order on the x0 prediction."""
    ab = model.ab
    lam = [0.5 * math.log(a / (1 - a)) if a < 1 else math.inf for a in ab]
    x0_prev, h_prev = None, None
    for i, (t, s) in enumerate(_pairs(timesteps)):
        _, x0 = model.predict(x, t)  # 1. data prediction
        if s == 0 or ab[s] >= 1:
            x = x0  # 2a. sigma_s = 0: the solution at t = 0 is the denoised image (first order)
        else:
            h = lam[s] - lam[t]  # 2b. step in lambda
            if x0_prev is None:
                d = x0  # first step: DPM-Solver++(1) = DDIM
            else:
                r = h_prev / h
                d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * x0_prev  # 3. second-order correction
            sigma_ratio = math.sqrt((1 - ab[s]) / (1 - ab[t]))
            x = sigma_ratio * x - math.sqrt(ab[s]) * math.expm1(-h) * d  # 4. exponential integrator
            x0_prev, h_prev = x0, h
        if callback:
            callback({"i": i, "t": t, "s": s, "x": x, "denoised": x0})
    return x


@dataclass(frozen=True)
class SamplerInfo:
    """What the UI and the CLI need to know about a sampler."""

    name: str
    label: str
    fn: Callable
    default_steps: int
    has_eta: bool
    stochastic: bool
    summary: str


SAMPLERS: dict[str, SamplerInfo] = {
    "ddpm": SamplerInfo("ddpm", "DDPM", sample_ddpm, 500, False, True,
                        "The course's sampler: one small noisy step per training step (500 model calls)."),
    "ddim": SamplerInfo("ddim", "DDIM", sample_ddim, 25, True, False,
                        "Skips steps by jumping along the predicted path; eta=0 is deterministic, eta=1 adds "
                        "noise like DDPM."),
    "dpmpp2m": SamplerInfo("dpmpp2m", "DPM-Solver++(2M)", sample_dpmpp_2m, 10, False, False,
                           "A second-order ODE solver that reuses the previous step: good images in 10-20 calls."),
}


def get_sampler(name: str) -> SamplerInfo:
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
    return SAMPLERS[name]


def initial_noise(n: int, shape: tuple[int, int, int], seed: int, device) -> torch.Tensor:
    """x_T ~ N(0, I) from a seed, drawn on the CPU so every device starts from the same noise."""
    g = torch.Generator().manual_seed(int(seed))
    return torch.randn((n, *shape), generator=g).to(device)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(B, C, H, W) in [-1, 1] -> (B, H, W, C) uint8."""
    return ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


@dataclass
class SampleResult:
    images: np.ndarray  # (B, H, W, 3) uint8
    sampler: str
    steps: int
    nfe: int
    seconds: float
    timesteps: list[int]
    seed: int
    settings: dict = field(default_factory=dict)

    @property
    def ms_per_call(self) -> float:
        return 1000 * self.seconds / max(self.nfe, 1)


def generate(net, schedule: Schedule, *, sampler: str = "ddim", steps: int | None = None, n: int = 16,
             context: torch.Tensor | np.ndarray | None = None, guidance: float = 1.0, eta: float = 0.0,
             seed: int = 0, precision: str = "fp32", clip_x0: bool = False, callback=None, cancel=None,
             noise: torch.Tensor | None = None) -> SampleResult:
    """Sample n images with one sampler from the noise of `seed` (or `noise`); times it honestly."""
    info = get_sampler(sampler)
    steps = steps or (schedule.T if sampler == "ddpm" else info.default_steps)
    device = next(net.parameters()).device
    cfg = net.config
    x = noise.to(device) if noise is not None else initial_noise(n, (cfg.in_channels, cfg.height, cfg.height), seed, device)
    n = x.shape[0]
    ctx = _context_batch(context, n, cfg.n_cfeat, device)
    model = Denoiser(net, schedule, ctx, guidance=guidance, precision=precision, cancel=cancel, clip_x0=clip_x0)
    timesteps = sampling_timesteps(steps, schedule.T)
    gen = torch.Generator(device=device).manual_seed(int(seed) + 1)  # the noise added along the way
    kwargs = {"eta": eta} if info.has_eta else {}
    was_training = net.training
    net.eval()
    if hasattr(net, "set_compat_seed"):
        net.set_compat_seed(int(seed) + 2, device)
    try:
        synchronize(device)
        start = time.perf_counter()
        with torch.inference_mode():
            x = info.fn(model, x, timesteps, generator=gen, callback=callback, **kwargs)
        synchronize(device)
        seconds = time.perf_counter() - start
    finally:
        net.train(was_training)
    settings = {"guidance": guidance, "eta": eta if info.has_eta else None, "precision": precision, "clip_x0": clip_x0}
    return SampleResult(to_uint8(x), sampler, steps, model.nfe, seconds, timesteps, int(seed), settings)


def _context_batch(context, n: int, n_cfeat: int, device) -> torch.Tensor | None:
    """Context rows for n images: None stays None (unconditional); fewer rows than n repeat in turn."""
    if context is None:
        return None
    c = torch.as_tensor(np.asarray(context, dtype=np.float32)).reshape(-1, n_cfeat)
    if c.shape[0] == 0:
        raise ValueError("context has no rows")
    reps = -(-n // c.shape[0])
    return c.repeat(reps, 1)[:n].to(device)
