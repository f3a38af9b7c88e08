"""Samplers: DDPM, DDIM, DPM-Solver++(2M/3M), Heun and Euler ancestral; one signature, one registry.

Every sampler is `sample_<name>(model, x, timesteps, *, generator=None, callback=None, **settings)`:
  model      a `Denoiser`: eps and x0 prediction (guidance, precision, NFE count, cancellation inside)
  x          (B, C, H, W) float32 noise at t = timesteps[0]
  timesteps  strictly decreasing t from T to 0, possibly fractional (`schedule.spaced_timesteps`)
  callback   called after every step with {"i", "t", "s", "x", "denoised"}
Notation: ab = alpha_bar; alpha_t = sqrt(ab_t), sigma_t = sqrt(1 - ab_t), lambda_t = log(alpha_t / sigma_t).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from .device import synchronize
from .catalog import SAMPLER_CATALOG, SIGMA_RAMP_MAX, T_DEFAULT
from .denoiser import Denoiser, SamplingCancelled  # noqa: F401 - the samplers' model, re-exported
from .schedule import Schedule, spaced_timesteps


def _pairs(timesteps):
    return list(zip(timesteps[:-1], timesteps[1:]))


def _lam(ab: float) -> float:
    """lambda = log(alpha / sigma) = log-SNR / 2; +inf for clean data, -inf for pure noise."""
    if ab >= 1:
        return math.inf
    return -math.inf if ab <= 0 else 0.5 * math.log(ab / (1 - ab))


def _is_consecutive(t, s) -> bool:
    return float(t).is_integer() and s == t - 1


def sample_ddpm(model: Denoiser, x, timesteps, *, generator=None, callback=None):
    """DDPM ancestral sampling (Ho et al. 2020, Alg. 2), sigma_t^2 = beta_t as in the course."""
    a_t = model.schedule.a_t.tolist()
    for i, (t, s) in enumerate(_pairs(timesteps)):
        eps, x0 = model.predict(x, t)  # 1. predict the noise
        ab_t, ab_s = model.ab_at(t), model.ab_at(s)
        # 2. alpha of this hop; for consecutive steps the course's a_t[t] exactly (ab_t[0] is forced to 1,
        #    so ab[1]/ab[0] differs from a_t[1] by beta_0 = 1e-4).
        alpha = a_t[int(t)] if _is_consecutive(t, s) else ab_t / ab_s
        if alpha > 0:
            # 3. posterior mean: (x_t - (1 - alpha) / sqrt(1 - ab_t) * eps) / sqrt(alpha)
            x = (x - (1 - alpha) / math.sqrt(1 - ab_t) * eps) / math.sqrt(alpha)
            noise_std = math.sqrt(1 - alpha)
        else:
            # 3'. zero terminal SNR, t = T: x_T holds no signal, so the posterior is q(x_s | x0) itself
            x, noise_std = math.sqrt(ab_s) * x0, math.sqrt(1 - ab_s)
        if s > 0:  # 4. add noise of variance beta, except on the last step (the course's z = 0 at t = 1)
            x = x + noise_std * torch.randn(x.shape, generator=generator, device=x.device)
        if callback:
            callback({"i": i, "t": t, "s": s, "x": x, "denoised": x0})
    return x


def sample_ddim(model: Denoiser, x, timesteps, *, eta: float = 0.0, generator=None, callback=None):
    """DDIM (Song et al. 2021, eq. 12): eta = 0 deterministic, eta = 1 ancestral like DDPM."""
    for i, (t, s) in enumerate(_pairs(timesteps)):
        eps, x0 = model.predict(x, t)  # 1. predict noise and clean image
        ab_t, ab_s = model.ab_at(t), model.ab_at(s)
        # 2. the noise this step re-injects: sigma = eta * sqrt((1-ab_s)/(1-ab_t)) * sqrt(1 - ab_t/ab_s)
        sigma = eta * math.sqrt((1 - ab_s) / (1 - ab_t) * (1 - ab_t / ab_s))
        # 3. x_s = sqrt(ab_s) x0 + sqrt(1 - ab_s - sigma^2) eps  (+ sigma z)
        x = math.sqrt(ab_s) * x0 + math.sqrt(max(1 - ab_s - sigma**2, 0.0)) * eps
        if sigma > 0:
            x = x + sigma * torch.randn(x.shape, generator=generator, device=x.device)
        if callback:
            callback({"i": i, "t": t, "s": s, "x": x, "denoised": x0})
    return x


def sample_dpmpp_2m(model: Denoiser, x, timesteps, *, generator=None, callback=None):
    """DPM-Solver++(2M) (Lu et al. 2022, Alg. 2): multistep second order on the x0 prediction."""
    x0_prev, h_prev = None, None
    for i, (t, s) in enumerate(_pairs(timesteps)):
        _, x0 = model.predict(x, t)  # 1. data prediction
        ab_t, ab_s = model.ab_at(t), model.ab_at(s)
        if ab_s >= 1:
            x = x0  # 2a. sigma_s = 0: the solution at t = 0 is the denoised image (first order)
        else:
            h = _lam(ab_s) - _lam(ab_t)  # 2b. step in lambda (inf from pure noise)
            if x0_prev is None or not math.isfinite(h_prev):
                d = x0  # first step (or after a step from pure noise): DPM-Solver++(1) = DDIM
            else:
                r = h_prev / h
                d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * x0_prev  # 3. second-order correction
            sigma_ratio = math.sqrt((1 - ab_s) / (1 - ab_t))
            x = sigma_ratio * x - math.sqrt(ab_s) * math.expm1(-h) * d  # 4. exponential integrator
            x0_prev, h_prev = x0, h
        if callback:
            callback({"i": i, "t": t, "s": s, "x": x, "denoised": x0})
    return x


def sample_dpmpp_3m(model: Denoiser, x, timesteps, *, generator=None, callback=None):
    """DPM-Solver++(3M) (Lu et al. 2022, s.4 / App. B): multistep third order on the x0 prediction.

    Orders ramp up 1, 2, 3 as history accumulates and step down again for the last two steps
    (lower-order final steps are more stable at few steps, as in the paper's implementation).
    """
    hist: list[tuple[torch.Tensor, float]] = []  # (x0, lambda) of earlier steps, newest first
    n = len(timesteps) - 1
    for i, (t, s) in enumerate(_pairs(timesteps)):
        _, x0 = model.predict(x, t)  # 1. data prediction
        ab_t, ab_s = model.ab_at(t), model.ab_at(s)
        lam_t, lam_s = _lam(ab_t), _lam(ab_s)
        if ab_s >= 1:
            x = x0  # 2a. the last step lands on the denoised image
        else:
            h = lam_s - lam_t
            order = min(len(hist) + 1, 3, n - i)  # 2b. order from the usable history
            if not math.isfinite(h):
                order = 1
            em = math.expm1(-h)  # e^{-h} - 1
            sigma_ratio = math.sqrt((1 - ab_s) / (1 - ab_t))
            x = sigma_ratio * x - math.sqrt(ab_s) * em * x0  # 3. first-order part (DDIM)
            if order >= 2:
                x0_1, lam_1 = hist[0]
                r0 = (lam_t - lam_1) / h
                d1_0 = (x0 - x0_1) / r0
                if order == 2:
                    x = x - math.sqrt(ab_s) * 0.5 * em * d1_0  # 4. second order (2M's correction)
                else:
                    x0_2, lam_2 = hist[1]
                    r1 = (lam_1 - lam_2) / h
                    d1_1 = (x0_1 - x0_2) / r1
                    d1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)  # 5. third order: first and second
                    d2 = (d1_0 - d1_1) / (r0 + r1)  #            divided differences in lambda
                    x = x + math.sqrt(ab_s) * ((em / h + 1) * d1 - ((em + h) / h**2 - 0.5) * d2)
            hist = [(x0, lam_t)] + hist[:1] if math.isfinite(lam_t) else []
        if callback:
            callback({"i": i, "t": t, "s": s, "x": x, "denoised": x0})
    return x


def sample_heun(model: Denoiser, x, timesteps, *, generator=None, callback=None):
    """Heun's 2nd-order method on the probability-flow ODE (Karras et al. 2022, Alg. 1).

    In Karras' variables y = x / sqrt(ab) and sigma, dy/dsigma = eps. Each step is an Euler step (the
    same as DDIM) corrected by the slope at its end; the last step (to sigma = 0) and a first step from
    beyond sigma 80 (pure noise on linear_zsnr, sigma 1e4 on cosine: the trapezoid there subtracts numbers
    of that size) are Euler only. Model calls: 2 * steps - 1, or 2 * steps - 2 on those two schedules.
    """
    for i, (t, s) in enumerate(_pairs(timesteps)):
        eps, x0 = model.predict(x, t)  # 1. slope at the start: eps
        sig_t, sig_s = model.sigma(t), model.sigma(s)
        a_s = math.sqrt(model.ab_at(s))
        x_euler = a_s * (x0 + sig_s * eps)  # 2. Euler step, y_s = x0 + sigma_s eps (exact form of DDIM)
        if sig_s == 0 or not sig_t <= SIGMA_RAMP_MAX:  # inf, or so large that the trapezoid cancels badly
            x = x_euler
        else:
            eps_s, _ = model.predict(x_euler, s)  # 3. slope at the end of the Euler step
            y = x / math.sqrt(model.ab_at(t)) + (sig_s - sig_t) * 0.5 * (eps + eps_s)  # 4. trapezoid rule
            x = a_s * y
        if callback:
            callback({"i": i, "t": t, "s": s, "x": x, "denoised": x0})
    return x


# Adams-Bashforth weights on the slopes (newest first) of orders 1-4: iPNDM's fixed multistep coefficients.
IPNDM_WEIGHTS = ((1.0,), (3 / 2, -1 / 2), (23 / 12, -16 / 12, 5 / 12), (55 / 24, -59 / 24, 37 / 24, -9 / 24))


def sample_ipndm(model: Denoiser, x, timesteps, *, generator=None, callback=None):
    """iPNDM (Zhang & Chen 2023, after Liu et al. 2022's PNDM): a 4th-order linear multistep method on the
    probability-flow ODE with a lower-order start.

    In Karras' variables y = x / sqrt(ab), dy/dsigma = eps; each step takes y_s = y_t + (sigma_s - sigma_t) e,
    where e mixes the last four slopes with the Adams-Bashforth weights (IPNDM_WEIGHTS; order 1, 2, 3 on the
    first three steps). One model call per step, no extra call at the end. A first step from beyond
    SIGMA_RAMP_MAX (pure noise on linear_zsnr) is the exact DDIM form y_s = x0 + sigma_s eps, as Heun's is.
    """
    slopes: list[torch.Tensor] = []  # newest first
    for i, (t, s) in enumerate(_pairs(timesteps)):
        eps, x0 = model.predict(x, t)
        sig_t, sig_s = model.sigma(t), model.sigma(s)
        a_s = math.sqrt(model.ab_at(s))
        slopes = [eps, *slopes][:len(IPNDM_WEIGHTS)]
        if not sig_t <= SIGMA_RAMP_MAX:  # y_t is infinite or huge: step from the prediction instead
            x = a_s * (x0 + sig_s * eps)
        else:
            e = sum(w * d for w, d in zip(IPNDM_WEIGHTS[len(slopes) - 1], slopes))
            x = a_s * (x / math.sqrt(model.ab_at(t)) + (sig_s - sig_t) * e)
        if callback:
            callback({"i": i, "t": t, "s": s, "x": x, "denoised": x0})
    return x


def sample_euler_ancestral(model: Denoiser, x, timesteps, *, eta: float = 1.0, generator=None, callback=None):
    """Euler ancestral (k-diffusion's sample_euler_ancestral): step down to sigma_down, add sigma_up noise.

    sigma_up = min(sigma_s, eta sqrt(sigma_s^2 (sigma_t^2 - sigma_s^2) / sigma_t^2)),
    sigma_down = sqrt(sigma_s^2 - sigma_up^2); in Karras' variables y_s = x0 + sigma_down eps + sigma_up z.
    """
    for i, (t, s) in enumerate(_pairs(timesteps)):
        eps, x0 = model.predict(x, t)  # 1. predict
        sig_t, sig_s = model.sigma(t), model.sigma(s)
        if sig_s == 0:
            x = x0  # 2a. last step: the denoised image
        else:
            frac = 1.0 if not math.isfinite(sig_t) else (sig_t**2 - sig_s**2) / sig_t**2
            sig_up = min(sig_s, eta * sig_s * math.sqrt(max(frac, 0.0)))  # 2b. noise to add back
            sig_down = math.sqrt(max(sig_s**2 - sig_up**2, 0.0))
            z = torch.randn(x.shape, generator=generator, device=x.device)
            x = math.sqrt(model.ab_at(s)) * (x0 + sig_down * eps + sig_up * z)  # 3. y_s back to x_s
        if callback:
            callback({"i": i, "t": t, "s": s, "x": x, "denoised": x0})
    return x


@dataclass(frozen=True)
class SamplerInfo:
    """A catalogue entry (core.catalog, torch-free) with the function that runs it."""

    name: str
    label: str
    fn: Callable
    default_steps: int
    has_eta: bool
    stochastic: bool
    summary: str


_FUNCTIONS = {"ddpm": sample_ddpm, "ddim": sample_ddim, "dpmpp2m": sample_dpmpp_2m, "dpmpp3m": sample_dpmpp_3m,
              "heun": sample_heun, "euler_a": sample_euler_ancestral, "ipndm": sample_ipndm}
SAMPLERS: dict[str, SamplerInfo] = {
    c.name: SamplerInfo(c.name, c.label, _FUNCTIONS[c.name], c.default_steps or T_DEFAULT, c.has_eta, c.stochastic,
                        c.summary)
    for c in SAMPLER_CATALOG
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
    timesteps: list[float]  # integers for the trailing spacing
    seed: int
    settings: dict = field(default_factory=dict)
    finite: bool = True  # False when the sampler produced NaN or inf (broken weights, absurd settings)

    @property
    def ms_per_call(self) -> float:
        return 1000 * self.seconds / max(self.nfe, 1)


def generate(net, schedule: Schedule, *, sampler: str = "ddim", steps: int | None = None, n: int = 16,
             context: torch.Tensor | np.ndarray | None = None, guidance: float = 1.0, eta: float = 0.0,
             seed: int = 0, precision: str = "fp32", clip_x0: bool = False, callback=None, cancel=None,
             noise: torch.Tensor | None = None, spacing: str = "trailing", guidance_rescale: float = 0.0,
             guidance_interval: tuple[float, float] = (0.0, 1.0), compile: bool = False,
             negative_context: torch.Tensor | np.ndarray | None = None, guide_net=None,
             start_t: float | None = None) -> SampleResult:
    """Sample n images with one sampler from the noise of `seed` (or `noise`); times it honestly.

    spacing chooses the timesteps (trailing, logsnr, karras) independently of the sampler; guidance,
    guidance_rescale and guidance_interval are the Denoiser's (see there). compile runs the network through
    torch.compile where a compiler is present (CUDA graphs on CUDA), else eagerly; the first call of each
    batch size includes the compile time. negative_context (rows as for context) guides away from another
    label instead of "no label"; guide_net guides with a weaker model instead (autoguidance): see Denoiser.
    start_t < T starts from `noise` taken as x at that timestep (SDEdit, core.editing)."""
    info = get_sampler(sampler)
    steps = steps or (schedule.T if sampler == "ddpm" else info.default_steps)
    device = next(net.parameters()).device
    cfg = net.config
    x = noise.to(device) if noise is not None else initial_noise(n, (cfg.in_channels, cfg.height, cfg.height), seed, device)
    n = x.shape[0]
    ctx = _context_batch(context, n, cfg.n_cfeat, device)
    neg = _context_batch(negative_context, n, cfg.n_cfeat, device)
    if neg is not None and ctx is None:
        raise ValueError("a negative label needs a context to guide (unconditional sampling has none)")
    if guide_net is not None:
        _check_guide(net, guide_net)
        guide_net.eval()
    model = Denoiser(net, schedule, ctx, guidance=guidance, precision=precision, cancel=cancel, clip_x0=clip_x0,
                     guidance_rescale=guidance_rescale, guidance_interval=guidance_interval, compile=compile,
                     negative=neg, guide_net=guide_net)
    timesteps = spaced_timesteps(steps, schedule, spacing, t_max=start_t)
    gen = torch.Generator(device=device).manual_seed(int(seed) + 1)  # the noise added along the way
    kwargs = {"eta": eta} if info.has_eta else {}
    was_training = net.training
    net.eval()
    if hasattr(net, "set_compat_seed"):
        net.set_compat_seed(int(seed) + 2, device)
    if guide_net is not None and hasattr(guide_net, "set_compat_seed"):
        guide_net.set_compat_seed(int(seed) + 3, device)
    try:
        synchronize(device)
        start = time.perf_counter()
        with torch.inference_mode():
            x = info.fn(model, x, timesteps, generator=gen, callback=callback, **kwargs)
        synchronize(device)
        seconds = time.perf_counter() - start
    finally:
        net.train(was_training)
    settings = {"guidance": guidance, "eta": eta if info.has_eta else None, "negative": neg is not None,
                "guide_model": guide_net is not None, "precision": precision, "clip_x0": clip_x0,
                "spacing": spacing, "guidance_rescale": guidance_rescale, "guidance_interval": list(guidance_interval),
                "prediction": schedule.prediction}
    if compile:
        settings["compiled"] = model.forward.compiled
        settings["compile_note"] = model.forward.note
    finite = bool(torch.isfinite(x).all())
    return SampleResult(to_uint8(x), sampler, steps, model.nfe, seconds, timesteps, int(seed), settings, finite)


def preview_grid(net, schedule: Schedule, n_labels: int, *, per_label: int = 6, steps: int = 20, seed: int = 1234,
                 precision: str = "fp32") -> np.ndarray:
    """A grid from fixed noise, one row per label: (rows, per_label, H, W, 3) uint8, by DPM-Solver++(2M)."""
    L = max(1, n_labels)
    eye = np.eye(L, dtype=np.float32) if n_labels else np.zeros((1, 1), np.float32)
    ctx = np.repeat(eye, per_label, axis=0)  # (L * per_label, L); one unconditional row if unlabelled
    res = generate(net, schedule, sampler="dpmpp2m", steps=steps, n=len(ctx), context=ctx, seed=seed,
                   precision=precision)
    return res.images.reshape(L, per_label, *res.images.shape[1:])


def _check_guide(net, guide_net) -> None:
    """A guide model must read the same images and contexts: same size, channels and number of labels."""
    a, b = net.config, guide_net.config
    if (a.height, a.in_channels, a.n_cfeat) != (b.height, b.in_channels, b.n_cfeat):
        raise ValueError(f"the guide model draws {b.height}x{b.height} images with {b.n_cfeat} label input(s); the "
                         f"model draws {a.height}x{a.height} with {a.n_cfeat}: a guide must match the model")
    if next(guide_net.parameters()).device != next(net.parameters()).device:
        raise ValueError("the guide model lives on another device than the model")


def _context_batch(context, n: int, n_cfeat: int, device) -> torch.Tensor | None:
    """Context rows for n images: None stays None (unconditional); fewer rows than n repeat in turn."""
    if context is None:
        return None
    c = torch.as_tensor(np.asarray(context, dtype=np.float32)).reshape(-1, n_cfeat)
    if c.shape[0] == 0:
        raise ValueError("context has no rows")
    reps = -(-n // c.shape[0])
    return c.repeat(reps, 1)[:n].to(device)
