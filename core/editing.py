"""Editing with a diffusion model: variation noise (slerp), SDEdit (a sketch or image noised part-way, then
denoised under a label) and RePaint inpainting (a masked region redrawn, the rest kept).

Images are (N, 3, H, W) float tensors in [-1, 1] (core.samplers.to_uint8 turns results into pictures).
"""
from __future__ import annotations

import math
import time

import torch

from .device import synchronize
from .samplers import Denoiser, SampleResult, _context_batch, generate, initial_noise, to_uint8
from .schedule import Schedule, spaced_timesteps


def slerp_noise(a: torch.Tensor, b: torch.Tensor, strength: float) -> torch.Tensor:
    """Spherical interpolation between two noises (variation seeds): strength 0 gives a, 1 gives b, and every
    mix in between keeps the norm of Gaussian noise (a straight mix would shrink it and blur the image).
    Per image, over all its pixels."""
    if strength <= 0:
        return a.clone()
    if strength >= 1:
        return b.clone()
    flat_a, flat_b = a.flatten(1).double(), b.flatten(1).double()
    cos = (flat_a * flat_b).sum(1) / (flat_a.norm(dim=1) * flat_b.norm(dim=1)).clamp_min(1e-12)
    omega = torch.arccos(cos.clamp(-1, 1))  # (N,)
    so = torch.sin(omega)
    wa = torch.where(so > 1e-6, torch.sin((1 - strength) * omega) / so, torch.full_like(so, 1 - strength))
    wb = torch.where(so > 1e-6, torch.sin(strength * omega) / so, torch.full_like(so, strength))
    out = wa[:, None] * flat_a + wb[:, None] * flat_b
    return out.reshape(a.shape).to(a.dtype)


def sdedit_start(schedule: Schedule, images: torch.Tensor, strength: float, *, seed: int = 0) -> tuple[torch.Tensor, float]:
    """SDEdit's starting point: (x_t0, t0) with t0 = strength * T and x_t0 = sqrt(ab) x0 + sqrt(1 - ab) z, z the
    noise of `seed` (initial_noise, one row per image). strength must be above 0. Shared by sdedit and the
    callers that show the noised sketch before denoising it."""
    if not 0 < strength:
        raise ValueError(f"SDEdit's strength must be above 0 to add noise, got {strength}")
    x0 = images.to(torch.float32)
    t0 = min(float(strength), 1.0) * schedule.T
    z = initial_noise(x0.shape[0], tuple(x0.shape[1:]), seed, x0.device)
    ab = schedule.ab_at(t0)
    return math.sqrt(ab) * x0 + math.sqrt(1 - ab) * z, t0


def sdedit(net, schedule: Schedule, images: torch.Tensor, strength: float, *, seed: int = 0, sampler: str = "ddim",
           steps: int = 10, **kwargs) -> SampleResult:
    """SDEdit (Meng et al. 2022): noise `images` to t0 = strength * T, x_t0 = sqrt(ab) x0 + sqrt(1 - ab) z, and
    denoise from there with `sampler` in `steps` steps (kwargs as for generate: context, guidance, spacing...).
    strength 0 returns the images; strength 1 on a zero-terminal-SNR schedule is plain sampling from z."""
    device = next(net.parameters()).device
    x0 = images.to(device, torch.float32)
    if strength <= 0:
        return SampleResult(to_uint8(x0), sampler, 0, 0, 0.0, [0], int(seed), {"strength": 0.0}, True)
    x_t0, t0 = sdedit_start(schedule, x0, strength, seed=seed)
    res = generate(net, schedule, sampler=sampler, steps=min(steps, math.ceil(t0)) if sampler == "ddpm" else steps,
                   noise=x_t0, seed=seed, start_t=t0, **kwargs)
    res.settings["strength"] = float(strength)
    return res


def inpaint(net, schedule: Schedule, images: torch.Tensor, redraw: torch.Tensor, *, steps: int = 50,
            resample: int = 1, jump: int = 1, seed: int = 0, context=None, guidance: float = 1.0,
            precision: str = "fp32", callback=None, cancel=None) -> SampleResult:
    """RePaint (Lugmayr et al. 2022): redraw where `redraw` (N, 1, H, W) or (H, W) is 1, keep the rest.

    Ancestral (DDIM eta = 1) steps over `steps` evenly spaced timesteps; before each step the kept part is
    replaced by the known image noised to the current level. The steps go in blocks of `jump`: each block is
    walked down `resample` times, the result noised back up to the block's start in between (RePaint's jumps
    of length j resampled r times; jump 1 redoes every step on its own). Every step is visited `resample`
    times, so a run makes steps * resample model calls (twice that with guidance) whatever the jump.
    `callback` is called after every step of every pass, info["final"] True on a block's last pass (the
    states that stay), info["pass"] the pass number.

    What holds exactly: with nothing redrawn the result is the input image (any resample and jump). The known
    image's noise comes from its own generator, so with everything redrawn and resample 1 this is exactly
    DDIM eta = 1 from the same noise (for any jump: without resampling no jump is taken); with everything
    redrawn and resample > 1 it is a longer, resampled chain, not plain sampling (for jump 1 too)."""
    device = next(net.parameters()).device
    x0_known = images.to(device, torch.float32)
    n = x0_known.shape[0]
    m = redraw.to(device, torch.float32)
    m = m.reshape(1, 1, *m.shape) if m.dim() == 2 else m  # (N or 1, 1, H, W)
    ctx = _context_batch(context, n, net.config.n_cfeat, device)
    model = Denoiser(net, schedule, ctx, guidance=guidance, precision=precision, cancel=cancel)
    timesteps = spaced_timesteps(steps, schedule, "trailing")
    pairs = list(zip(timesteps[:-1], timesteps[1:]))
    resample, jump = max(1, int(resample)), max(1, int(jump))
    x = initial_noise(n, tuple(x0_known.shape[1:]), seed, device)
    gen = torch.Generator(device=device).manual_seed(int(seed) + 1)  # as generate's: the sampler's own noise
    known_gen = torch.Generator(device=device).manual_seed(int(seed) + 7)  # the known image's noise
    was_training = net.training
    net.eval()
    synchronize(device)
    start = time.perf_counter()
    try:
        with torch.inference_mode():
            for b in range(0, len(pairs), jump):
                block = pairs[b:b + jump]
                for r in range(resample):
                    for k, (t, s) in enumerate(block):
                        ab_t = model.ab_at(t)
                        known_t = math.sqrt(ab_t) * x0_known + math.sqrt(1 - ab_t) * torch.randn(
                            x.shape, generator=known_gen, device=device)
                        x = m * x + (1 - m) * known_t
                        eps, x0 = model.predict(x, t)
                        ab_s = model.ab_at(s)
                        sigma = math.sqrt((1 - ab_s) / (1 - ab_t) * (1 - ab_t / ab_s)) if ab_t < 1 else 0.0
                        x = math.sqrt(ab_s) * x0 + math.sqrt(max(1 - ab_s - sigma**2, 0.0)) * eps
                        if sigma > 0:
                            x = x + sigma * torch.randn(x.shape, generator=gen, device=device)
                        if callback:
                            callback({"i": b + k, "t": t, "s": s, "x": x, "denoised": x0, "pass": r,
                                      "final": r == resample - 1})
                    if r < resample - 1:  # back to the block's start: x_hi = sqrt(ab_hi / ab_lo) x_lo + ... z
                        ab_hi, ab_lo = model.ab_at(block[0][0]), model.ab_at(block[-1][1])
                        x = math.sqrt(ab_hi / ab_lo) * x + math.sqrt(1 - ab_hi / ab_lo) * torch.randn(
                            x.shape, generator=gen, device=device)
            x = m * x + (1 - m) * x0_known  # the kept part exactly as given
        synchronize(device)
        seconds = time.perf_counter() - start
    finally:
        net.train(was_training)
    settings = {"guidance": guidance, "resample": resample, "jump": jump, "precision": precision,
                "redrawn": float(m.mean())}
    return SampleResult(to_uint8(x), "repaint", steps, model.nfe, seconds, timesteps, int(seed), settings,
                        bool(torch.isfinite(x).all()))
