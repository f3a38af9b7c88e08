"""Noise schedules: the course's linear beta schedule (default) and the cosine schedule.

Notation (DDPM, Ho et al. 2020):
    b_t      beta_t, the noise variance added at step t
    a_t      alpha_t = 1 - beta_t
    ab_t     alpha_bar_t = prod_{s<=t} alpha_s; ab_t[0] = 1 (clean data)
    x_t      sqrt(ab_t) * x_0 + sqrt(1 - ab_t) * eps
Indices run 0..T; the network sees t / T.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

SCHEDULE_KINDS = ("linear", "cosine")


@dataclass(frozen=True)
class ScheduleConfig:
    """How noise is added. Defaults are the course's: T=500, beta 1e-4 -> 0.02 linear."""

    kind: str = "linear"
    T: int = 500
    beta1: float = 1e-4
    beta2: float = 0.02
    cosine_s: float = 0.008  # Nichol & Dhariwal 2021, offset that keeps beta small near t=0

    def __post_init__(self):
        if self.kind not in SCHEDULE_KINDS:
            raise ValueError(f"unknown schedule {self.kind!r}; choose one of {', '.join(SCHEDULE_KINDS)}")
        if self.T < 1:
            raise ValueError(f"T must be at least 1, got {self.T}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ScheduleConfig":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def linear_betas(T: int, beta1: float, beta2: float) -> torch.Tensor:
    """The course's betas over indices 0..T: (beta2 - beta1) * linspace(0, 1, T+1) + beta1."""
    return (beta2 - beta1) * torch.linspace(0, 1, T + 1, dtype=torch.float64) + beta1


def cosine_alpha_bar(T: int, s: float) -> torch.Tensor:
    """alpha_bar(t) = f(t)/f(0), f(t) = cos((t/T + s)/(1 + s) * pi/2)^2 (Nichol & Dhariwal 2021, eq. 17)."""
    t = torch.arange(T + 1, dtype=torch.float64) / T
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    ab = f / f[0]
    # Clip betas at 0.999 as the paper does, so the last step is not a division by zero.
    betas = (1 - ab[1:] / ab[:-1]).clamp(max=0.999)
    return torch.cat([ab[:1], torch.cumprod(1 - betas, 0)])


class Schedule:
    """Precomputed schedule tensors (float64 on the CPU; `to()` gives float32 copies for a device)."""

    def __init__(self, config: ScheduleConfig | None = None):
        self.config = config or ScheduleConfig()
        T = self.config.T
        if self.config.kind == "linear":
            self.b_t = linear_betas(T, self.config.beta1, self.config.beta2)  # (T+1,)
            self.a_t = 1 - self.b_t
            self.ab_t = torch.cumsum(self.a_t.log(), 0).exp()
            self.ab_t[0] = 1.0  # as the course: index 0 is clean data
        else:
            self.ab_t = cosine_alpha_bar(T, self.config.cosine_s)
            self.a_t = torch.cat([torch.ones(1, dtype=torch.float64), self.ab_t[1:] / self.ab_t[:-1]])
            self.b_t = 1 - self.a_t

    @property
    def T(self) -> int:
        return self.config.T

    def alpha_bar(self, t) -> torch.Tensor:
        return self.ab_t[t]

    def snr(self) -> torch.Tensor:
        """Signal-to-noise ratio ab/(1-ab) per index (inf at t=0)."""
        return self.ab_t / (1 - self.ab_t)

    def log_snr(self) -> torch.Tensor:
        """log SNR = 2 * lambda_t, where lambda_t = log(alpha_t / sigma_t) of DPM-Solver."""
        return self.snr().log()

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Forward noising x_t = sqrt(ab_t) x_0 + sqrt(1-ab_t) eps for integer t of shape (B,).

        The course notebook writes (1 - ab_t) * noise without the square root: a known bug that
        under-noises every step. We use the correct formula.
        """
        ab = self.ab_t.to(device=x0.device, dtype=x0.dtype)[t].view(-1, 1, 1, 1)  # (B,1,1,1)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


def sampling_timesteps(steps: int, T: int) -> list[int]:
    """Indices a sampler visits with `steps` model calls: T down to 0, trailing spacing.

    Returns steps + 1 strictly decreasing integers, first T and last 0 (Lin et al. 2024,
    "Common Diffusion Noise Schedules and Sample Steps are Flawed", trailing spacing). Valid for
    every step count 1..T, including those that do not divide T (the course's DDIM indexes out
    of range there).
    """
    if not 1 <= steps <= T:
        raise ValueError(f"steps must be between 1 and {T}, got {steps}")
    # T/steps >= 1, so rounding an evenly spaced grid keeps the indices distinct.
    return [round(T - i * T / steps) for i in range(steps)] + [0]
