"""Noise schedules (the course's linear beta schedule by default, cosine, zero-terminal-SNR) and step spacings.

Notation (DDPM, Ho et al. 2020):
    b_t      beta_t, the noise variance added at step t
    a_t      alpha_t = 1 - beta_t
    ab_t     alpha_bar_t = prod_{s<=t} alpha_s; ab_t[0] = 1 (clean data)
    x_t      sqrt(ab_t) * x_0 + sqrt(1 - ab_t) * eps
    sigma    sqrt((1 - ab_t) / ab_t), the noise level of x_t / sqrt(ab_t) (Karras et al. 2022's sigma)
Indices run 0..T; the network sees t / T. Fractional t (the log-SNR and Karras spacings) use ab
interpolated linearly in log-SNR between the neighbouring indices: log-SNR is the quantity the
solvers step in, and it is smooth where ab itself changes by orders of magnitude.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch

from .catalog import NAMED_SPACING, check_field_types, config_dict, KARRAS_RHO, SIGMA_RAMP_MAX, PREDICTIONS, SCHEDULE_KINDS, SPACINGS, T_DEFAULT, ZERO_TERMINAL_SCHEDULES


@dataclass(frozen=True)
class ScheduleConfig:
    """How noise is added. Defaults are the course's: T=500, beta 1e-4 -> 0.02 linear."""

    kind: str = "linear"
    T: int = T_DEFAULT
    beta1: float = 1e-4
    beta2: float = 0.02
    cosine_s: float = 0.008  # Nichol & Dhariwal 2021, offset that keeps beta small near t=0
    # What the network predicts; kept with the schedule (as diffusers' prediction_type) because every
    # sampler needs both to turn the network's output into eps and x0. Course files are "eps".
    prediction: str = "eps"
    # Named spacings found for one model ("tuned-5" by core.step_search, "distilled-4" for a distilled
    # student): (name, timesteps from T to 0) pairs, kept with the schedule because the timesteps only mean
    # something on it; training starts every new model with none.
    spacings: tuple = ()

    def __post_init__(self):
        if self.kind not in SCHEDULE_KINDS:
            raise ValueError(f"unknown schedule {self.kind!r}; choose one of {', '.join(SCHEDULE_KINDS)}")
        check_field_types(self)
        if not 1 <= self.T <= T_MAX:
            raise ValueError(f"T must be a whole number from 1 to {T_MAX}, got {self.T!r}")
        if not 0 < self.beta1 <= self.beta2 < 1 or not 0 < self.cosine_s < 1:
            raise ValueError(f"need 0 < beta1 <= beta2 < 1 and 0 < cosine_s < 1, got {self.beta1}, {self.beta2}, "
                             f"{self.cosine_s}")
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"unknown prediction target {self.prediction!r}; choose one of {', '.join(PREDICTIONS)}")
        if self.kind in ZERO_TERMINAL_SCHEDULES and self.prediction == "eps":
            raise ValueError(f"the {self.kind} schedule ends in pure noise, where predicting eps says nothing "
                             "about the image: use prediction v or x0")
        _check_alpha_bar(self, alpha_bar(self))
        object.__setattr__(self, "spacings", _checked_spacings(self.spacings, self.T))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ScheduleConfig":
        return cls(**{k: v for k, v in config_dict(d, "schedule_config").items() if k in cls.__dataclass_fields__})

    def named_spacing(self, name: str) -> list | None:
        """The timesteps of a named spacing of this model, or None."""
        return next((list(ts) for n, ts in self.spacings if n == name), None)

    def with_spacing(self, name: str, timesteps) -> "ScheduleConfig":
        """A copy holding one more named spacing (replacing one of the same name)."""
        kept = tuple((n, ts) for n, ts in self.spacings if n != name)
        return replace(self, spacings=kept + ((name, tuple(float(t) for t in timesteps)),))


MAX_NAMED_SPACINGS = 32


def _checked_spacings(spacings, T: int) -> tuple:
    """Named spacings from a file: a name such as tuned-5, then strictly decreasing timesteps from T to 0."""
    if not isinstance(spacings, (list, tuple)) or len(spacings) > MAX_NAMED_SPACINGS:
        raise ValueError(f"spacings must be a list of at most {MAX_NAMED_SPACINGS} [name, timesteps] pairs")
    out = []
    for item in spacings:
        if not isinstance(item, (list, tuple)) or len(item) != 2 or not isinstance(item[0], str):
            raise ValueError("each named spacing must be a [name, timesteps] pair")
        name, ts = item
        if not NAMED_SPACING.fullmatch(name):
            raise ValueError(f"named spacing {name[:40]!r} must look like tuned-5 or distilled-4")
        if (not isinstance(ts, (list, tuple)) or not 2 <= len(ts) <= T + 1
                or not all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in ts)):
            raise ValueError(f"named spacing {name}: needs 2 to {T + 1} timesteps")
        ts = tuple(float(t) for t in ts)
        if ts[0] != T or ts[-1] != 0 or not all(a > b for a, b in zip(ts, ts[1:])):
            raise ValueError(f"named spacing {name}: timesteps must fall strictly from {T} to 0")
        out.append((name, ts))
    return tuple(out)


T_MAX = 10_000  # DDPM makes one model call per step; published schedules use at most a few thousand
# The least alpha_bar a schedule that does not end in pure noise may reach: the samplers divide by
# sqrt(alpha_bar), and training and sampling hold it in float32, where much smaller values are 0.
AB_MIN = 1e-20


def _check_alpha_bar(config: "ScheduleConfig", ab: torch.Tensor) -> None:
    """Betas that the numbers cannot carry (tiny: no step adds noise; huge, or too many steps: the image is gone
    long before T) divide by zero in the samplers: refuse them with the reason."""
    betas = f"beta1 {config.beta1!r}, beta2 {config.beta2!r}, T {config.T}"
    if not torch.isfinite(ab).all() or not bool((ab[1:] < ab[:-1]).all()):
        raise ValueError(f"this {config.kind} schedule ({betas}) does not add noise at every step (alpha_bar "
                         "stops falling: the betas are too small for the numbers to carry); use larger betas")
    zero_terminal = config.kind in ZERO_TERMINAL_SCHEDULES
    if zero_terminal and config.T == 1:
        return  # one step, from pure noise: nothing in between to divide by
    last = float(ab[-2] if zero_terminal else ab[-1])  # the last index that should still hold signal
    if last < AB_MIN:
        raise ValueError(f"this {config.kind} schedule ({betas}) leaves alpha_bar {last:.3g} near the last step, "
                         f"below {AB_MIN:g}: the image is gone long before step T and the samplers would divide by "
                         "zero; use smaller betas or fewer steps")


def alpha_bar(config: "ScheduleConfig") -> torch.Tensor:
    """alpha_bar at indices 0..T (float64) of a schedule config; index 0 is clean data (1)."""
    T = config.T
    if config.kind == "cosine":
        return cosine_alpha_bar(T, config.cosine_s)
    ab = torch.cumsum((1 - linear_betas(T, config.beta1, config.beta2)).log(), 0).exp()
    ab[0] = 1.0  # as the course: index 0 is clean data
    if config.kind == "linear":
        return ab
    ab = rescale_zero_terminal_snr(ab)  # linear_zsnr: the course's ab rescaled so the last index holds no signal
    ab[-1] = 0.0  # exactly, not 1e-33 from rounding
    return ab


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


def rescale_zero_terminal_snr(ab: torch.Tensor) -> torch.Tensor:
    """Shift and scale sqrt(ab) so sqrt(ab_T) = 0 while sqrt(ab_0) is kept (Lin et al. 2024, Alg. 1)."""
    r = ab.sqrt()
    r0, rT = r[0].clone(), r[-1].clone()
    r = (r - rT) * r0 / (r0 - rT)
    return r**2


class Schedule:
    """Precomputed schedule tensors (float64 on the CPU; `to()` gives float32 copies for a device)."""

    def __init__(self, config: ScheduleConfig | None = None):
        self.config = config or ScheduleConfig()
        self.ab_t = alpha_bar(self.config)  # (T+1,)
        if self.config.kind == "linear":
            self.b_t = linear_betas(self.config.T, self.config.beta1, self.config.beta2)  # (T+1,)
            self.a_t = 1 - self.b_t
            return
        self.a_t = torch.cat([torch.ones(1, dtype=torch.float64), self.ab_t[1:] / self.ab_t[:-1]])
        self.b_t = 1 - self.a_t

    @property
    def T(self) -> int:
        return self.config.T

    @property
    def prediction(self) -> str:
        return self.config.prediction

    @property
    def zero_terminal(self) -> bool:
        return float(self.ab_t[-1]) == 0.0

    def ab_at(self, t: float) -> float:
        """alpha_bar at a possibly fractional t, interpolated linearly in log-SNR (see module docstring)."""
        if not 0 <= t <= self.T:
            raise ValueError(f"t must be in [0, {self.T}], got {t}")
        lo = int(math.floor(t))
        if t == lo:
            return float(self.ab_t[lo])
        a, b = float(self.ab_t[lo]), float(self.ab_t[lo + 1])
        if a >= 1.0 or b <= 0.0:  # one end is clean (log-SNR +inf) or pure noise (-inf): interpolate ab
            return a + (t - lo) * (b - a)
        la, lb = math.log(a / (1 - a)), math.log(b / (1 - b))
        lam = la + (t - lo) * (lb - la)
        return 1.0 / (1.0 + math.exp(-lam))

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


def spaced_timesteps(steps: int, schedule: Schedule, spacing: str = "trailing", t_max: float | None = None) -> list:
    """steps + 1 strictly decreasing timesteps from T (or t_max) to 0 for `steps` model-call steps.

    trailing  uniform in t, always starting at T (integers; today's default)
    logsnr    uniform in log-SNR between t = T and t = 1
    karras    sigma_i = (smax^(1/rho) + i/(n-1) (smin^(1/rho) - smax^(1/rho)))^rho (Karras et al. 2022, eq. 5)
    The last two give fractional t. A zero-terminal-SNR schedule has sigma_T = inf: the ramp then runs
    from the largest finite sigma (at most SIGMA_RAMP_MAX) and its first point is pinned to t = T.
    t_max < T starts part-way (SDEdit: from a noised image): the same spacing over (0, t_max].
    """
    named = schedule.config.named_spacing(spacing)
    if named is not None:
        return _named(spacing, named, steps, schedule, t_max)
    if spacing not in SPACINGS:
        extra = [n for n, _ in schedule.config.spacings]
        raise ValueError(f"unknown spacing {spacing!r}; choose one of {', '.join([*SPACINGS, *extra])}")
    if t_max is not None and t_max < schedule.T:
        return _spaced_from(steps, schedule, spacing, float(t_max))
    T = schedule.T
    if spacing == "trailing" or steps == 1 or T == 1:
        return sampling_timesteps(steps, T)  # integers
    if not 1 <= steps <= T:
        raise ValueError(f"steps must be between 1 and {T}, got {steps}")
    lam, _ = _log_snr_table(schedule)
    # Cap the noisy end at EDM's sigma_max = 80: schedules whose last steps hold almost no signal
    # (cosine, zero terminal SNR) would otherwise spend most steps where nothing visible happens.
    lam_max, lam_min = lam[0], max(lam[-1], -2 * math.log(SIGMA_RAMP_MAX))
    # the noisiest point is exactly t = T (pure noise under zero terminal SNR); coincident points can only
    # come from steps close to T: fall back to integers
    return _ramp(steps, schedule, spacing, lam_min, lam_max, T) or sampling_timesteps(steps, T)


def _named(name: str, timesteps: list, steps: int, schedule: Schedule, t_max: float | None) -> list:
    """A model's named spacing: its own number of steps, from T."""
    if steps != len(timesteps) - 1:
        raise ValueError(f"the spacing {name} has {len(timesteps) - 1} steps, not {steps}: set the steps to "
                         f"{len(timesteps) - 1}")
    if t_max is not None and t_max < schedule.T:
        raise ValueError(f"the spacing {name} starts from pure noise; use another spacing to start part-way")
    return [int(t) if t.is_integer() else t for t in timesteps]


def spacing_names(config: ScheduleConfig) -> tuple[str, ...]:
    """Every spacing a model can sample with: the built-in ones, then its named ones."""
    return (*SPACINGS, *(n for n, _ in config.spacings))


def named_spacing_steps(config: ScheduleConfig, name: str) -> int | None:
    """How many steps a named spacing takes (None for the built-in spacings, which take any number)."""
    ts = config.named_spacing(name)
    return None if ts is None else len(ts) - 1


def _spaced_from(steps: int, schedule: Schedule, spacing: str, t_max: float) -> list:
    """spaced_timesteps over (0, t_max]: uniform in t (trailing) or log-SNR, or Karras' ramp in sigma."""
    if not 0 < t_max:
        raise ValueError(f"the starting timestep must be above 0, got {t_max}")
    if spacing == "trailing" or steps == 1:
        out = [float(t_max - i * t_max / steps) for i in range(steps)] + [0.0]
        return [int(t) if t.is_integer() else t for t in out]
    lam_of = lambda t: math.log(schedule.ab_at(t) / (1 - schedule.ab_at(t)))
    lam_max, lam_min = lam_of(1.0), max(lam_of(t_max), -2 * math.log(SIGMA_RAMP_MAX))
    return _ramp(steps, schedule, spacing, lam_min, lam_max, t_max) or _spaced_from(steps, schedule, "trailing", t_max)


def _log_snr_table(schedule: Schedule) -> tuple[np.ndarray, np.ndarray]:
    """(log-SNR, t) at t = 1..T where the SNR is finite; log-SNR decreases with t."""
    ab = schedule.ab_t[1:].numpy()  # (T,), indices 1..T
    finite = ab > 0
    lam = np.log(ab[finite] / (1 - ab[finite]))
    return lam, np.arange(1, schedule.T + 1, dtype=np.float64)[finite]


def karras_ramp(steps: int, schedule: Schedule, *, rho: float = KARRAS_RHO, sigma_max: float = SIGMA_RAMP_MAX,
                t_last: float = 1.0) -> list | None:
    """Karras' ramp with its own rho, largest sigma and last noise level: steps points from sigma_max down to
    the sigma at t_last (the first pinned to T), then 0. "karras" is rho 7, sigma_max 80 (or less where the
    schedule ends lower), t_last 1. None when two points coincide."""
    if not (steps >= 2 and rho > 0 and sigma_max > 0 and 0 < t_last < schedule.T):
        raise ValueError("a ramp needs 2 or more steps, rho and sigma max above 0 and 0 < t_last < T")
    lam, _ = _log_snr_table(schedule)
    ab = schedule.ab_at(t_last)
    lam_min, lam_max = max(lam[-1], -2 * math.log(sigma_max)), math.log(ab / (1 - ab))
    return _ramp(steps, schedule, "karras", lam_min, lam_max, schedule.T, rho)


def _ramp(steps: int, schedule: Schedule, spacing: str, lam_min: float, lam_max: float, t_first: float,
          rho: float = KARRAS_RHO) -> list | None:
    """steps points uniform in log-SNR ("logsnr") or on Karras' sigma ramp between lam_min and lam_max, turned
    back into t (the first pinned to t_first) and ended by 0; None when two points coincide."""
    if spacing == "logsnr":
        grid = np.linspace(lam_min, lam_max, steps)  # noisiest first
    else:
        smax, smin = math.exp(-lam_min / 2), math.exp(-lam_max / 2)
        ramp = np.linspace(0, 1, steps)
        sig = (smax ** (1 / rho) + ramp * (smin ** (1 / rho) - smax ** (1 / rho))) ** rho
        grid = -2 * np.log(sig)
    lam, t_idx = _log_snr_table(schedule)
    # invert log-SNR(t): np.interp needs increasing x, so walk the reversed arrays
    ts = np.interp(grid, lam[::-1], t_idx[::-1])
    ts[0] = t_first
    out = [float(t) for t in ts] + [0.0]
    return out if all(a > b for a, b in zip(out, out[1:])) else None
