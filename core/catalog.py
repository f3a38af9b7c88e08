"""The choices both sides of the torch boundary need, with no torch import: the one source of each.

The desktop imports this module before torch has loaded (the window appears first); core's configs
validate against the same tuples, so a new option is added here once and nothing else drifts.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, fields

from .schema import is_finite_number, is_int, shown

T_DEFAULT = 500  # the course's number of diffusion steps
COURSE_LABEL_NAMES = ("hero", "non-hero", "food", "spell", "side-facing")  # the course's sprite labels, in order
IMAGE_SIDE_MAX = 512  # px: the largest image side a network is built for (its memory grows with the square)
LABEL_NAME_MAX = 255  # characters in a label name: what a folder name (a label of a folder data set) can hold
BUILTIN_DATASETS = {"emoji16": "emoji16.npz", "emoji32": "emoji32.npz"}  # name: file under resources/
MODEL_FILE, RESUME_FILE, LOG_FILE = "model.safetensors", "resume.safetensors", "loss.csv"  # a run folder's files
SECOND_EMA_FILE = "model.ema2.safetensors"  # the second EMA's model, when a run keeps one (second_ema_decay)
DIVERGED_FILE = "diverged.json"  # written when a run stops because it diverged; a resume then needs --force

# --- networks ---------------------------------------------------------------------------------------
NETWORKS = ("course", "desk")
NETWORK_SUMMARY = {
    "course": "the course's ContextUnet: the label multiplies the decoder at two points; no attention",
    "desk": "an ADM-style U-Net: the label steers every residual block (scale and shift), attention at 8 and 4 px",
}

# --- training objective ---------------------------------------------------------------------------
PREDICTIONS = ("eps", "v", "x0")  # what the network outputs; eps is the course's
PREDICTION_SUMMARY = {
    "eps": "the noise that was added (the course's choice)",
    "v": "a mix of noise and image, v = sqrt(ab) eps - sqrt(1-ab) x0 (Salimans & Ho 2022)",
    "x0": "the clean image itself",
}
LOSS_WEIGHTINGS = ("uniform", "min_snr")  # uniform: plain MSE on the target (the course's)
MIN_SNR_GAMMA = 5.0  # Hang et al. 2023
SCHEDULE_KINDS = ("linear", "cosine", "linear_zsnr")
SCHEDULE_SUMMARY = {
    "linear": "the course's: beta 1e-4 to 0.02 over 500 steps (leaves 8% of the image at the last step)",
    "cosine": "Nichol & Dhariwal 2021: destroys the image more gently, good for small images",
    "linear_zsnr": "the course's, rescaled so the last step is pure noise (Lin et al. 2024; needs v or x0)",
}
ZERO_TERMINAL_SCHEDULES = ("linear_zsnr",)  # ab_T = 0: an eps model cannot recover x0 there
# sigma at t = T beyond SIGMA_RAMP_MAX (linear_zsnr: inf, cosine: 1e4; the course's linear: 12.6): Heun's
# first step there is Euler only, so it makes one model call fewer
SIGMA_T_BEYOND_RAMP = ("linear_zsnr", "cosine")
LR_SCHEDULES = ("linear", "cosine", "constant")
OPTIMIZERS = ("adam", "adamw")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# Fine-tuning: a label the checkpoint did not know starts as "no label" (zero inputs) or as the known label
# the model finds closest to that label's images
NEW_LABEL_INITS = ("zero", "nearest")
# Guidance the app sets when it teaches a new label: a label learnt in minutes is drawn recognisably only when
# guided (docs/app.md, "What the fine-tune achieves": the share called the new label by scale).
TAUGHT_GUIDANCE = 3.0
# Where guidance acts, as t/T: everywhere by default. A narrower interval (Kynkaanniemi et al. 2024) guides
# only the middle noise levels and makes one conditional pass elsewhere.
GUIDANCE_EVERYWHERE = (0.0, 1.0)
# Teach a shortcut (core.training.distill): by default the student learns the teacher's accurate solution,
# DPM-Solver++(3M) over about this many Karras steps.
DISTILL_ACCURATE_TEACHER, DISTILL_TEACHER_CALLS = "karras", 24
DISTILL_AUTO_TEACHER = "auto"  # the teacher spacing chosen by distill_teacher_spacing


def distill_teacher_spacing(spacings, tuned_info, calls: int) -> str:
    """What a student of `calls` calls learns from by default: of the model's ramp-tuned spacings (tune-steps
    --method ramp) with more steps than `calls`, the one the search scored closest to the training images,
    else the accurate solution. A student can at best draw what its teacher draws: on the shipped model the
    accurate solution scores twice DDPM-500's feature-FID, the ramp-tuned 5- and 6-call spacings below it, and
    the better the teacher the better the student (at 4 calls tuned-6 over tuned-5, at 2 tuned-5 over tuned-4).
    `spacings`: the schedule config's (name, timesteps) pairs; `tuned_info`: the file's extra["tuned"]."""
    tuned_info = tuned_info if isinstance(tuned_info, dict) else {}

    def score(name):
        info = tuned_info.get(name)
        ok = isinstance(info, dict) and info.get("method") == "ramp" and is_finite_number(info.get("error"))
        return float(info["error"]) if ok else None

    found = sorted((score(name), len(ts) - 1, name) for name, ts in spacings
                   if len(ts) - 1 > calls and score(name) is not None)
    return found[0][2] if found else DISTILL_ACCURATE_TEACHER
# BatchNorm with several training processes: each rank's own slice of the batch, or the whole batch
BATCHNORM_MODES = ("per_rank", "global")

# --- sampling ---------------------------------------------------------------------------------------
SPACINGS = ("trailing", "logsnr", "karras")
SPACING_SUMMARY = {
    "trailing": "evenly spaced steps, always starting at the last (noisiest) step",
    "logsnr": "evenly spaced in log signal-to-noise ratio: more steps where the image forms",
    "karras": "Karras et al. 2022 (rho = 7): many small steps near the clean image",
}
KARRAS_RHO = 7.0
# A spacing one model holds (core.schedule.ScheduleConfig.spacings): tuned-5 or tuned-heun-9 from the step
# search, distilled-4 of a distilled student
NAMED_SPACING = re.compile(r"(tuned|distilled)(-[a-z0-9]{1,12})?-[0-9]{1,4}")
SIGMA_RAMP_MAX = 80.0  # Karras et al. 2022's sigma_max: where the log-SNR and Karras ramps start at most


@dataclass(frozen=True)
class SamplerChoice:
    """What the UI and the CLI need to know about a sampler (the function lives in core.samplers)."""

    name: str
    label: str
    default_steps: int  # 0 means "one step per training step" (T)
    has_eta: bool
    stochastic: bool
    calls_per_step: int  # model calls per step without guidance (Heun: 2, except its last step)
    summary: str


SAMPLER_CATALOG: tuple[SamplerChoice, ...] = (
    SamplerChoice("ddpm", "DDPM", 0, False, True, 1,
                  "The course's sampler: one small noisy step per training step (500 model calls)."),
    SamplerChoice("ddim", "DDIM", 25, True, False, 1,
                  "Skips steps by jumping along the predicted path; eta=0 is deterministic, eta=1 adds "
                  "noise like DDPM."),
    SamplerChoice("dpmpp2m", "DPM-Solver++(2M)", 10, False, False, 1,
                  "A second-order ODE solver that reuses the previous step: good images in 10-20 calls."),
    SamplerChoice("dpmpp3m", "DPM-Solver++(3M)", 10, False, False, 1,
                  "Like DPM-Solver++(2M) but remembers two earlier steps: a little sharper at 10-20 calls."),
    SamplerChoice("heun", "Heun", 10, False, False, 2,
                  "Karras et al.'s sampler: looks ahead and corrects each step (two model calls per step)."),
    SamplerChoice("ipndm", "iPNDM", 10, False, False, 1,
                  "A 4th-order multistep ODE solver (Zhang & Chen 2023): one call per step, holds up at 5-10 calls."),
    SamplerChoice("euler_a", "Euler ancestral", 20, False, True, 1,
                  "Jumps to a less noisy image and adds fresh noise back each step: varied, forgiving."),
)
SAMPLER_NAMES = tuple(s.name for s in SAMPLER_CATALOG)


def sampler_choice(name: str) -> SamplerChoice:
    for s in SAMPLER_CATALOG:
        if s.name == name:
            return s
    raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLER_NAMES)}")


def model_calls(name: str, steps: int, *, guided: bool = False, zero_terminal: bool = False) -> int:
    """Model calls per image for `steps` steps. Heun skips its correction on the final step, and on a
    zero-terminal-SNR schedule also on the first (from pure noise it takes a first-order step)."""
    info = sampler_choice(name)
    calls = steps if info.calls_per_step == 1 else max(1, 2 * steps - 1 - (zero_terminal and steps > 1))
    return calls * (2 if guided else 1)


def check_field_types(config) -> None:
    """Config dataclasses: whole numbers where a field is int, finite numbers where float (files and flags lie)."""
    for f in fields(config):
        v = getattr(config, f.name)
        kind = f.type if isinstance(f.type, str) else f.type.__name__
        if kind == "int" and not is_int(v):
            raise ValueError(f"{f.name.replace('_', ' ')} must be a whole number, got {shown(v)}")
        if kind == "float" and not is_finite_number(v):
            raise ValueError(f"{f.name.replace('_', ' ')} must be a finite number, got {shown(v)}")
        if kind == "bool" and not isinstance(v, bool):
            raise ValueError(f"{f.name.replace('_', ' ')} must be true or false, got {shown(v)}")
        if kind == "str" and not isinstance(v, str):
            raise ValueError(f"{f.name.replace('_', ' ')} must be text, got {shown(v)}")


def config_dict(d, what: str) -> dict:
    """A config read from a file must be a JSON object: say so instead of failing on .items()."""
    if not isinstance(d, dict):
        raise ValueError(f"{what} must be a JSON object, got {type(d).__name__}")
    return d
