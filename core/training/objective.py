"""The training objective's pieces: learning-rate and EMA schedules, per-timestep loss weights, label-balanced
drawing, the loss per noise band that the log records, and what a fine-tune does to its new labels' images
(noise levels biased towards high noise, small shifts and colour nudges)."""
from __future__ import annotations

import math

import numpy as np
import torch

from ..catalog import MIN_SNR_GAMMA
from ..schedule import Schedule


def lr_at(config, step: int) -> float:
    """Learning rate for (0-based) step: warmup, then the course's linear decay, cosine, or constant."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(config.steps - config.warmup_steps, 1)
    if config.lr_schedule == "linear":
        return config.lr * (1 - progress)
    if config.lr_schedule == "cosine":
        return config.lr * 0.5 * (1 + math.cos(math.pi * progress))
    return config.lr


def loss_weights(schedule: Schedule, prediction: str, weighting: str, gamma: float = MIN_SNR_GAMMA) -> torch.Tensor:
    """Per-timestep weight (T+1,) on the MSE of the prediction target.

    min-SNR-gamma (Hang et al. 2023) weights the x0 error by min(SNR, gamma). The eps error equals SNR
    times the x0 error and the v error (SNR + 1) times it, so the same weighting reads
        eps: min(SNR, gamma) / SNR      v: min(SNR, gamma) / (SNR + 1)      x0: min(SNR, gamma)
    (the v form is the one diffusers got wrong twice). SNR = 0 (zero terminal SNR) gives weight 0 for v
    and x0; t = 0 is never trained.
    """
    T = schedule.T
    if weighting == "uniform":
        return torch.ones(T + 1, dtype=torch.float64)
    ab = schedule.ab_t.clone()
    ab[0] = 0.5  # t = 0 is never drawn; any finite SNR keeps the table finite
    snr = ab / (1 - ab)
    clipped = snr.clamp(max=gamma)
    if prediction == "eps":
        return clipped / snr
    if prediction == "v":
        return clipped / (snr + 1)
    return clipped


def label_balanced_weights(labels: np.ndarray) -> torch.Tensor:
    """Per-image draw probabilities (N,) under which every label -- and "no label" -- is drawn equally often:
    an image weighs the mean of 1/count over its labels (multi-label images share them)."""
    labels = np.asarray(labels, dtype=np.float64) > 0
    none = ~labels.any(axis=1)
    groups = np.concatenate([labels, none[:, None]], axis=1)  # (N, L + 1)
    counts = groups.sum(axis=0)
    inv = np.where(counts > 0, 1.0 / np.maximum(counts, 1), 0.0)
    w = (groups * inv).sum(axis=1) / groups.sum(axis=1)
    return torch.as_tensor(w / w.sum(), dtype=torch.float32)


# A new label's images are drawn at most this often each per step (on average): more and a label with a dozen
# images is learnt by heart (measured: "moon", 18 images at 3.3 draws each per step, gave near-copies; "fruit",
# 34 images at 1.8, did not: docs/app.md, "What the fine-tune achieves").
MAX_NEW_DRAWS = 1.8


def split_draw(weights: torch.Tensor | None, new_rows: np.ndarray, share: float, batch: int, processes: int = 1):
    """A fine-tune's batch as two exact parts: (old-row draw weights (N,), new-row draw weights (N,), new rows per
    process's batch of `batch`) with round(share * batch) of it from the new labels' images, at most MAX_NEW_DRAWS
    per new image and step over all `processes`, and the rest replaying the others, each part keeping the relative
    weights it had (`weights`; None = uniform). None when there is nothing to split (no new rows, or only new
    rows). Exact counts keep the old rows first in every batch, so work on them alone needs no look at the data."""
    new = torch.as_tensor(np.asarray(new_rows, bool))
    if not new.any() or new.all():
        return None
    w = torch.ones(len(new)) if weights is None else weights.detach().cpu().float()
    n_new = min(round(share * batch), int(MAX_NEW_DRAWS * int(new.sum()) / processes))
    n_new = min(batch - 1, max(1, n_new))
    return torch.where(new, 0.0, w), torch.where(new, w, 0.0), n_new


def ema_decay_at(decay: float, step: int) -> float:
    """Warmed-up EMA decay min(decay, (1+step)/(10+step)): a fixed 0.999 from step 0 ruins short runs."""
    return min(decay, (1 + step) / (10 + step))


def band_losses(losses: torch.Tensor, ts: torch.Tensor, T: int) -> tuple[float, float, float]:
    """Mean loss for t in (0, T/3], (T/3, 2T/3], (2T/3, T]: low, mid and high noise."""
    band = ((ts - 1) * 3 // T).clamp(0, 2)
    out = []
    for k in range(3):
        sel = losses[band == k]
        out.append(float(sel.mean()) if sel.numel() else float("nan"))
    return tuple(out)


def biased_timesteps(n: int, T: int, bias: float, generator: torch.Generator) -> torch.Tensor:
    """(n,) timesteps in 1..T whose t/T has density (bias + 1) * s**bias on (0, 1]: 0 is uniform, 1 rises
    linearly towards pure noise (mean 2/3 T), larger values crowd near T."""
    u = torch.rand(n, generator=generator, device=generator.device)
    return (u.pow(1.0 / (1.0 + bias)) * T).ceil().clamp(1, T).long()


def shift_one_pixel(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image (B, C, H, W) moved by -1, 0 or +1 pixel in each direction, the edge pixels continuing (an
    emoji's white margin stays white). On the device, no sync."""
    b, c, h, w = x.shape
    dev = x.device
    d = torch.randint(-1, 2, (b, 2), generator=generator, device=dev)  # (B, 2): dy, dx
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="replicate")  # (B, C, H+2, W+2)
    ys = torch.arange(h, device=dev)[None] + 1 - d[:, :1]  # (B, H)
    xs = torch.arange(w, device=dev)[None] + 1 - d[:, 1:]  # (B, W)
    rows = torch.arange(b, device=dev)[:, None, None, None]
    chans = torch.arange(c, device=dev)[None, :, None, None]
    return padded[rows, chans, ys[:, None, :, None], xs[:, None, None, :]]  # (B, C, H, W)


def shift_and_jitter(x: torch.Tensor, generator: torch.Generator, *, jitter: float = 0.1) -> torch.Tensor:
    """Each image (B, 3, H, W) in [-1, 1] shifted by shift_one_pixel and each colour channel's distance from
    white scaled by a factor in [1 - jitter, 1 + jitter] (white stays white, colours shift slightly)."""
    moved = shift_one_pixel(x, generator)
    b, c = x.shape[:2]
    scale = 1 + jitter * (2 * torch.rand(b, c, 1, 1, generator=generator, device=x.device) - 1)
    return (1 - (1 - moved) * scale).clamp(-1, 1)


def treat_new_labels(x0: torch.Tensor, t: torch.Tensor, new: torch.Tensor, config, T: int, generator: torch.Generator):
    """A fine-tune's batch (x0 (B, 3, H, W), t (B,)) with the new labels' images (`new`, (B,) bool) given
    config.new_label_noise_bias's timesteps and config.new_label_augment's shifts and colour nudges."""
    if config.new_label_noise_bias > 0:
        t = torch.where(new, biased_timesteps(len(t), T, config.new_label_noise_bias, generator), t)
    if config.new_label_augment:
        x0 = torch.where(new.view(-1, 1, 1, 1), shift_and_jitter(x0, generator), x0)
    return x0, t
