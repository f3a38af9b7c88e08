"""Teach a shortcut: distil a model into a student that draws in 1-4 model calls.

The method is SFD's ("Simple and Fast Distillation of Diffusion Models", Zhou et al. 2024), chosen for a CPU
budget of minutes: the student starts from the teacher's weights and learns to make, in one DDIM step, the
jump the teacher's accurate ODE solver makes between two of the student's timesteps.
  1. pool: `trajectories` noise images are solved by the teacher with DPM-Solver++(3M) over about
     `teacher_calls` Karras steps plus the student's own timesteps; the states at the student's timesteps
     are kept (the pool is the run's training data, saved once in the run folder);
  2. a step: a batch of (trajectory, student step k) pairs; the student's prediction at the teacher's state
     x_k, t_k, turned into a DDIM step to t_k+1, should land on the teacher's x_k+1: mean squared error;
  3. classifier-free guidance can be built in (Meng et al. 2023, "On Distillation of Guided Diffusion
     Models"): the teacher's trajectories are guided at `guidance`, so the student draws guided images in
     one pass per step, not two; 10% of the trajectories have no label, so "no label" still works.
Against the alternatives on this budget: progressive distillation halves the steps per round and needs
log2(N) full training rounds; consistency distillation trains for hundreds of thousands of steps. SFD reuses
one pool of teacher solutions for every step and needs about a thousand optimizer steps.

A student can itself be the teacher (a second round, as in progressive distillation, Salimans & Ho 2022): the
pool is then what the teacher student draws with its own sampler, DDIM over its distilled-N timesteps, and
the new student makes in one call what it makes in two (or more). The teacher student's guidance is already
built in, so none is added.

The student is a checkpoint like any other (the teacher's network and labels) with a named spacing
"distilled-<calls>" (DDIM over those timesteps is its sampler) and the teacher in its metadata.
"""
from __future__ import annotations

import copy
import json
import math
import time
import uuid
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from safetensors.torch import save_file

from ..catalog import (DISTILL_ACCURATE_TEACHER, DISTILL_AUTO_TEACHER, DISTILL_TEACHER_CALLS, LOG_FILE, MODEL_FILE,
                       RESUME_FILE, SPACINGS, check_field_types, config_dict, distill_teacher_spacing)
from ..checkpoint import (CheckpointError, ModelBundle, load_matching, load_resume_state, read_tensors, save_checkpoint,
                          save_resume_state)
from ..denoiser import EPS_X0_CLIP_BELOW, Denoiser
from ..device import autocast, resolve_precision, to_fast_layout
from ..errors import UserError
from ..paths import atomic_write_bytes, file_digest
from ..runlock import take_run_lock
from ..samplers import initial_noise, sample_ddim, sample_dpmpp_3m
from ..schedule import Schedule, spaced_timesteps
from ..tensors import expected_state
from .objective import band_losses, ema_decay_at
from .resume import OPTIMIZER_MOMENTS, loss_scale_state, restore_loss_scale
from .runlog import append_log, truncate_log
from .trainer import StepMetrics, TrainingDiverged

POOL_FILE = "pool.safetensors"
CONFIG_FILE = "distill.json"
MAX_CALLS = 8
LOG_EVERY_CUDA = 10  # steps whose losses are read back together on a GPU
ACCURATE = DISTILL_ACCURATE_TEACHER  # teacher_spacing: the teacher's accurate solution over a Karras ramp


@dataclass(frozen=True)
class DistillConfig:
    calls: int = 4  # the student's model calls per image (its DDIM steps)
    # the student's timesteps: a built-in spacing, a named one of the teacher, or "auto": the teacher's tuned-<calls>
    # when it has one (core.step_search), else trailing (evenly spaced in t: Karras' ramp spends a 4-step
    # student's last call between t = 1 and 0, where nothing is left to do)
    spacing: str = "auto"
    teacher_calls: int = DISTILL_TEACHER_CALLS  # the teacher's DPM-Solver++(3M) steps along a whole trajectory (about)
    # what the student learns to draw: "karras" = the teacher's accurate solution (about teacher_calls Karras
    # steps with the student's timesteps added); a named spacing of the teacher (e.g. tuned-5) = what its
    # DPM-Solver++(3M) draws over exactly those timesteps, which can look better than the accurate solution
    # (a ramp-tuned 5-call spacing is closer to the data than 24 steps are); the student's timesteps are then
    # some of the teacher's. "auto": core.catalog.distill_teacher_spacing (the Distiller records its choice)
    teacher_spacing: str = DISTILL_AUTO_TEACHER
    guidance: float = 1.0  # classifier-free guidance built into the student (1 = none)
    trajectories: int = 4096  # teacher solutions in the pool
    steps: int = 1200  # optimizer steps
    batch_size: int = 64
    lr: float = 1e-4  # Adam, linear decay to 0
    ema_decay: float = 0.995  # the student file holds this EMA of the weights
    unconditional: float = 0.1  # share of trajectories drawn with no label
    grad_clip: float = 1.0
    seed: int = 0
    checkpoint_every: int = 100
    precision: str = "auto"

    def __post_init__(self):
        check_field_types(self)
        if not 1 <= self.calls <= MAX_CALLS:
            raise ValueError(f"calls must be between 1 and {MAX_CALLS}, got {self.calls}")
        if not self.calls <= self.teacher_calls <= 500:
            raise ValueError(f"teacher calls must be between the student's calls ({self.calls}) and 500")
        if not 0 < self.guidance <= 20:
            raise ValueError(f"guidance must be above 0 and at most 20, got {self.guidance}")
        if self.trajectories < self.batch_size or self.batch_size < 1 or self.trajectories > 200_000:
            raise ValueError("need at least one batch of trajectories (and at most 200,000)")
        if not 1 <= self.steps <= 10**6 or self.checkpoint_every < 1:
            raise ValueError("steps must be between 1 and 1,000,000 and checkpoint every at least 1")
        if not 0 < self.lr <= 1 or not 0 <= self.ema_decay < 1 or not 0 <= self.unconditional <= 1:
            raise ValueError("need 0 < lr <= 1, 0 <= EMA decay < 1 and 0 <= unconditional share <= 1")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DistillConfig":
        return cls(**{k: v for k, v in config_dict(d, "distill config").items() if k in cls.__dataclass_fields__})

    @classmethod
    def from_saved(cls, d: dict) -> "DistillConfig":
        """A run's saved config: one written before teacher_spacing existed learnt from the accurate solution."""
        return cls.from_dict({"teacher_spacing": ACCURATE, **config_dict(d, "distill config")})

    @property
    def spacing_name(self) -> str:
        return f"distilled-{self.calls}"


class DistillError(UserError, ValueError):
    """A distillation that cannot start or continue; str() says why in one line."""


def student_timesteps(schedule: Schedule, config: DistillConfig) -> list[float]:
    """The student's calls + 1 timesteps from T to 0. Learning from a named teacher spacing, they are some of
    its timesteps: "auto" merges its shortest jumps (see merge_shortest_jumps), another spacing must be a
    subset of it."""
    if config.teacher_spacing == DISTILL_AUTO_TEACHER:
        raise ValueError("teacher spacing 'auto' is settled by the Distiller (it needs the teacher's file)")
    if config.teacher_spacing != ACCURATE:
        teacher = _named_teacher_spacing(schedule, config)
        if config.spacing == "auto":
            return merge_shortest_jumps(teacher, config.calls)
        own = student_timesteps(schedule, replace(config, teacher_spacing=ACCURATE))
        if not set(own) <= set(teacher):
            raise DistillError(f"spacing {config.spacing!r}: its timesteps are not among the teacher spacing "
                               f"{config.teacher_spacing}'s; use spacing auto")
        return own
    if config.spacing == "auto":
        tuned = f"tuned-{config.calls}"
        spacing = tuned if schedule.config.named_spacing(tuned) is not None else "trailing"
        return [float(t) for t in spaced_timesteps(config.calls, schedule, spacing)]
    if config.spacing not in SPACINGS and schedule.config.named_spacing(config.spacing) is None:
        raise DistillError(f"spacing {config.spacing!r}: the teacher has no such spacing")
    return [float(t) for t in spaced_timesteps(config.calls, schedule, config.spacing)]


def _named_teacher_spacing(schedule: Schedule, config: DistillConfig) -> list[float]:
    named = schedule.config.named_spacing(config.teacher_spacing)
    if named is None:
        raise DistillError(f"teacher spacing {config.teacher_spacing!r}: the teacher has no such spacing (it has "
                           f"{', '.join(n for n, _ in schedule.config.spacings) or 'none'}; or use karras)")
    if len(named) - 1 < config.calls:
        raise DistillError(f"teacher spacing {config.teacher_spacing}: {len(named) - 1} steps, fewer than the "
                           f"student's {config.calls} calls")
    return [float(t) for t in named]


def merge_shortest_jumps(timesteps: list[float], steps: int) -> list[float]:
    """`timesteps` (T ... 0) thinned to `steps` steps by removing, one at a time, the inner timestep whose two
    jumps together are the shortest in t: the student makes in one call what the teacher made in two where
    the teacher's steps are smallest (for a ramp ending t = 1, 0 the first to go is t = 1)."""
    ts = list(timesteps)
    while len(ts) - 1 > steps:
        i = min(range(1, len(ts) - 1), key=lambda j: ts[j - 1] - ts[j + 1])
        del ts[i]
    return ts


def distilled_calls(teacher: ModelBundle) -> int | None:
    """The model calls of a distilled teacher (its file's extra.distilled.calls), None for any other model."""
    info = ((teacher.meta or {}).get("extra") or {}).get("distilled")
    calls = info.get("calls") if isinstance(info, dict) else None
    return calls if isinstance(calls, int) and not isinstance(calls, bool) and 1 <= calls <= MAX_CALLS else None


def student_teacher_config(config: DistillConfig, teacher_calls: int) -> DistillConfig:
    """`config` for a teacher that is itself a student of `teacher_calls` calls: it teaches what it draws over
    its own timesteps (teacher spacing distilled-N), to a student of fewer calls, with no guidance added."""
    own = f"distilled-{teacher_calls}"
    if config.calls >= teacher_calls:
        raise DistillError(f"this model is a {teacher_calls}-call student: it can teach a student of 1 to "
                           f"{teacher_calls - 1} calls, not {config.calls}")
    if config.teacher_spacing not in (DISTILL_AUTO_TEACHER, own):
        raise DistillError(f"this model is a {teacher_calls}-call student: it teaches what it draws over its own "
                           f"timesteps; use teacher spacing auto or {own}, not {config.teacher_spacing}")
    if config.guidance != 1:
        raise DistillError("this model is a distilled student with its guidance built in: distil it with "
                           "guidance 1")
    return replace(config, teacher_spacing=own)


def teacher_timesteps(schedule: Schedule, student: list[float], teacher_calls: int,
                      teacher_spacing: str = ACCURATE) -> list[float]:
    """The teacher's grid: a Karras ramp of teacher_calls steps with the student's timesteps added, or a named
    spacing of the teacher as it is (the student's timesteps are among it)."""
    if teacher_spacing != ACCURATE:
        return [float(t) for t in schedule.config.named_spacing(teacher_spacing)]
    ramp = [float(t) for t in spaced_timesteps(teacher_calls, schedule, "karras")]
    return sorted(set(ramp) | set(student), reverse=True)


def jump(out: torch.Tensor, x: torch.Tensor, prediction: str, a_t, s_t, a_s, s_s) -> torch.Tensor:
    """One DDIM step from x at t to s from the network's output: a_s x0 + s_s eps. The coefficients are
    (B, 1, 1, 1) tensors, one timestep per image."""
    if prediction == "v":
        eps, x0 = s_t * x + a_t * out, a_t * x - s_t * out
    elif prediction == "x0":
        x0 = out
        eps = (x - a_t * x0) / s_t.clamp_min(1e-8)
    else:
        x0 = (x - s_t * out) / a_t.clamp_min(1e-8)
        low = a_t < EPS_X0_CLIP_BELOW  # as the Denoiser: x0 from eps is unbounded where a is tiny
        x0 = torch.where(low, x0.clamp(-1, 1), x0)
        eps = torch.where(low, (x - a_t * x0) / s_t.clamp_min(1e-8), out)
    return a_s * x0 + s_s * eps


class Distiller:
    """One distillation run in `out_dir` from a teacher bundle; run() yields StepMetrics like the Trainer."""

    def __init__(self, teacher: ModelBundle, config: DistillConfig, out_dir: str | Path, *, resume: bool = False,
                 progress=None, cancel=None):
        if teacher.path is None:
            raise DistillError("the teacher must be a saved model file")
        self.teacher, self.config, self.out_dir = teacher, config, Path(out_dir)
        self.notes: list[str] = []
        self.device = next(teacher.net.parameters()).device
        self.precision = resolve_precision(config.precision, self.device)
        self.schedule = Schedule(teacher.schedule_config)
        # a student as the teacher draws with its own sampler (DDIM over its timesteps), any other with 3M
        self.teacher_student_calls = distilled_calls(teacher)
        self.teacher_solver = sample_dpmpp_3m
        if self.teacher_student_calls is not None:
            self.config = config = student_teacher_config(config, self.teacher_student_calls)
            self.teacher_solver = sample_ddim
        elif config.teacher_spacing == DISTILL_AUTO_TEACHER:  # settled here, so the run and its files name it
            tuned = ((teacher.meta or {}).get("extra") or {}).get("tuned")
            self.config = config = replace(config, teacher_spacing=distill_teacher_spacing(
                teacher.schedule_config.spacings, tuned, config.calls))
        self.student_ts = student_timesteps(self.schedule, config)
        self._lock = take_run_lock(self.out_dir)
        try:
            self.teacher_sha = file_digest(teacher.path)
            self._setup(resume, progress, cancel)
        except BaseException:
            self._lock.release()
            raise

    def _setup(self, resume, progress, cancel) -> None:
        cfg = self.config
        self.net = copy.deepcopy(self.teacher.net).train().requires_grad_(True)
        self.ema = copy.deepcopy(self.teacher.net).eval().requires_grad_(False)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=cfg.lr)
        # fp16 (a GPU without bf16 in hardware) needs loss scaling, or its small gradients round to zero
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
        self.step, self.elapsed, self.run_id = 0, 0.0, uuid.uuid4().hex[:12]
        self._stop_requested = False
        self._log_rows: list[list] = []
        ab = [self.schedule.ab_at(t) for t in self.student_ts]
        self.coef_a = torch.tensor([math.sqrt(v) for v in ab], dtype=torch.float32, device=self.device)
        self.coef_s = torch.tensor([math.sqrt(max(1 - v, 0.0)) for v in ab], dtype=torch.float32, device=self.device)
        self.ts = torch.tensor(self.student_ts, dtype=torch.float32, device=self.device)
        if resume:
            self._check_same_run()
        self.states, self.contexts = self._pool(progress, cancel)
        if resume:
            self._load_resume()
        else:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(self.out_dir / CONFIG_FILE, json.dumps(self._identity(), indent=1).encode())
            truncate_log(self.out_dir / LOG_FILE, 0)

    def _identity(self) -> dict:
        return {"distill_config": self.config.to_dict(), "teacher": str(self.teacher.path),
                "teacher_sha256": self.teacher_sha, "student_timesteps": self.student_ts}

    def _check_same_run(self) -> None:
        path = self.out_dir / CONFIG_FILE
        try:
            saved = json.loads(path.read_text()[:1 << 20])
        except (OSError, ValueError) as e:
            raise DistillError(f"{path}: cannot read the run's settings ({e}); start a new run") from None
        if not isinstance(saved, dict) or saved.get("teacher_sha256") != self.teacher_sha:
            raise DistillError(f"{self.out_dir}: this run distils another teacher (or its file changed); resume it "
                               "with the model it started from, or start a new run")
        if _but_steps(_normalised(saved.get("distill_config"))) != _but_steps(self.config.to_dict()):
            raise DistillError(f"{self.out_dir}: this run was started with other settings; resume it with the same "
                               "ones (they are in distill.json), or start a new run")

    # --- the pool of teacher solutions ---------------------------------------------------------------------
    def _pool(self, progress, cancel) -> tuple[torch.Tensor, torch.Tensor]:
        """(states (N, calls + 1, C, H, W) at the student's timesteps, contexts (N, L)), on the device."""
        path = self.out_dir / POOL_FILE
        if path.is_file():
            return self._read_pool(path)
        cfg, net = self.config, self.teacher.net
        n, k = cfg.trajectories, net.config.n_cfeat
        g = torch.Generator().manual_seed(cfg.seed + 1)
        labels = torch.randint(0, k, (n,), generator=g)
        ctx = torch.eye(k)[labels] * (torch.rand(n, generator=g) >= cfg.unconditional).unsqueeze(1).float()
        noise = initial_noise(n, (net.config.in_channels, net.config.height, net.config.height), cfg.seed + 2, "cpu")
        grid = teacher_timesteps(self.schedule, self.student_ts, cfg.teacher_calls, cfg.teacher_spacing)
        keep_at = {t: i for i, t in enumerate(self.student_ts)}
        chunk, out = 256, []
        for lo in range(0, n, chunk):
            x = noise[lo:lo + chunk]
            states = [x]

            def keep(d):
                if float(d["s"]) in keep_at:
                    states.append(d["x"].float().cpu())

            model = Denoiser(net, self.schedule, ctx[lo:lo + chunk].to(self.device), guidance=cfg.guidance,
                             precision=self.precision, cancel=cancel)
            with torch.inference_mode():
                self.teacher_solver(model, x.to(self.device), grid, callback=keep)
            out.append(torch.stack(states, 1))
            if progress:
                progress(min(lo + chunk, n), n)
        states = torch.cat(out)
        if not torch.isfinite(states).all():
            raise DistillError("the teacher's solutions hold NaN or infinite values; this model cannot be distilled")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{POOL_FILE}.{uuid.uuid4().hex[:8]}.tmp")
        save_file({"states": states.contiguous(), "contexts": ctx.contiguous()}, str(tmp),
                  metadata={"teacher_sha256": self.teacher_sha, "config": json.dumps(self.config.to_dict())})
        tmp.replace(path)
        return states.to(self.device), ctx.to(self.device)

    def _read_pool(self, path: Path) -> tuple[torch.Tensor, torch.Tensor]:
        cfg, c = self.config, self.teacher.net.config
        try:
            t = read_tensors(path)
        except CheckpointError as e:
            raise DistillError(f"{e}; delete the file to make the teacher's solutions again") from None
        want = {"states": (cfg.trajectories, cfg.calls + 1, c.in_channels, c.height, c.height),
                "contexts": (cfg.trajectories, c.n_cfeat)}
        for name, shape in want.items():
            if name not in t or tuple(t[name].shape) != shape or not torch.isfinite(t[name]).all():
                raise DistillError(f"{path}: tensor {name} is missing or damaged; delete the file to make it again")
        return t["states"].float().to(self.device), t["contexts"].float().to(self.device)

    # --- training --------------------------------------------------------------------------------------------
    def lr_at(self, step: int) -> float:
        return self.config.lr * (1 - step / self.config.steps)

    def _train_step(self) -> tuple[torch.Tensor, torch.Tensor]:
        cfg, K = self.config, self.config.calls
        # drawn on the CPU (the resume file keeps that generator's state); a GPU gets both in one copy from
        # pinned memory, which does not wait for the GPU's queued work as a pageable copy does
        idx = torch.randint(0, cfg.trajectories, (cfg.batch_size,), generator=self.gen)
        k = torch.randint(0, K, (cfg.batch_size,), generator=self.gen)
        if self.device.type == "cuda":
            idx, k = torch.stack((idx, k)).pin_memory().to(self.device, non_blocking=True)
        x, target = self.states[idx, k], self.states[idx, k + 1]
        t = self.ts[k]
        a_t, s_t = self.coef_a[k].view(-1, 1, 1, 1), self.coef_s[k].view(-1, 1, 1, 1)
        a_s, s_s = self.coef_a[k + 1].view(-1, 1, 1, 1), self.coef_s[k + 1].view(-1, 1, 1, 1)
        for group in self.opt.param_groups:
            group["lr"] = self.lr_at(self.step)
        with autocast(self.device, self.precision):
            out = self.net(to_fast_layout(x), t / self.schedule.T, self.contexts[idx])
        landed = jump(out.float(), x, self.schedule.prediction, a_t, s_t, a_s, s_s)
        per_sample = (landed - target).pow(2).mean(dim=(1, 2, 3))  # (B,)
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(per_sample.mean()).backward()
        if cfg.grad_clip > 0:
            self.scaler.unscale_(self.opt)
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), cfg.grad_clip)
        self.scaler.step(self.opt)
        self.scaler.update()
        with torch.no_grad():
            d = ema_decay_at(cfg.ema_decay, self.step)
            torch._foreach_lerp_(list(self.ema.parameters()), list(self.net.parameters()), 1 - d)
            for eb, b in zip(self.ema.buffers(), self.net.buffers()):
                eb.copy_(b)
        return per_sample.detach(), t

    def run(self) -> Iterator[StepMetrics]:
        """Distil until config.steps, yielding metrics after every step (pauses: stop iterating). On CUDA the
        losses are read back in groups of LOG_EVERY_CUDA steps: one device sync per group, as the Trainer."""
        cfg = self.config
        group = LOG_EVERY_CUDA if self.device.type == "cuda" else 1
        pending: list[tuple[torch.Tensor, torch.Tensor, float]] = []
        start = time.perf_counter()
        while self.step < cfg.steps:
            lr = self.lr_at(self.step)
            losses, ts = self._train_step()
            self.step += 1
            pending.append((losses, ts, lr))
            if len(pending) < group and self.step < cfg.steps:
                continue
            now = time.perf_counter()
            dt = now - start
            self.elapsed += dt
            yield from self._flush(pending, dt)
            pending = []
            if self._stop_requested:
                return
            start = time.perf_counter()

    def _flush(self, pending, dt: float) -> Iterator[StepMetrics]:
        cfg = self.config
        all_losses = torch.stack([p[0] for p in pending]).float().cpu()  # the group's one device sync
        all_ts = torch.stack([p[1] for p in pending]).cpu()
        first = self.step - len(pending) + 1
        for j, (losses, ts, lr) in enumerate(zip(all_losses, all_ts, (p[2] for p in pending))):
            step, loss = first + j, float(losses.mean())
            if not math.isfinite(loss):
                raise TrainingDiverged(f"the distillation loss became NaN or infinite at step {step}; the last "
                                       f"saved step is kept in {self.out_dir}. Try a lower learning rate.")
            m = StepMetrics(step, cfg.steps, loss, lr, cfg.batch_size * len(pending) / max(dt, 1e-9), self.elapsed,
                            band_losses(losses, ts.round().long(), self.schedule.T))
            self._log_rows.append([m.step, f"{loss:.6f}", f"{lr:.3e}", f"{m.images_per_s:.1f}",
                                   *(f"{v:.6f}" for v in m.band_loss)])
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                self.save()
            yield m

    def request_stop(self) -> None:
        self._stop_requested = True

    # --- files --------------------------------------------------------------------------------------------------
    def save(self) -> Path:
        """The log, then resume.safetensors (the commit), then the student (model.safetensors)."""
        append_log(self.out_dir / LOG_FILE, self._log_rows)
        self._log_rows = []
        info = {"elapsed": self.elapsed, "run_id": self.run_id, "train_config": self.config.to_dict()}
        if self.scaler.is_enabled():
            info["loss_scale"] = loss_scale_state(self.scaler)
        save_resume_state(self.out_dir / RESUME_FILE, model_state=self.net.state_dict(),
                          optimizer_state=self.opt.state_dict(), rng_state=self.gen.get_state(), step=self.step,
                          info=info, ema_state=self.ema.state_dict())
        return self._save_student()

    def _save_student(self) -> Path:
        t = self.teacher
        m = t.meta
        sched = replace(t.schedule_config, spacings=()).with_spacing(self.config.spacing_name, self.student_ts)
        distilled = {"teacher": t.path.name, "teacher_sha256": self.teacher_sha, "calls": self.config.calls,
                     "guidance": self.config.guidance, "spacing": self.config.spacing_name,
                     "method": self._method(),
                     "teacher_calls": self.config.teacher_calls, "distill_steps": self.step,
                     "distill_config": self.config.to_dict()}
        return save_checkpoint(self.out_dir / MODEL_FILE, self.ema.state_dict(), unet_config=t.net.config,
                               schedule_config=sched, label_names=t.label_names, dataset=m.get("dataset") or "",
                               fingerprint=m.get("dataset_fingerprint") or "", step=m.get("step") or 0,
                               precision=self.precision, train_config=m.get("train_config") or {},
                               extra={"elapsed": self.elapsed, "run_id": self.run_id, "distilled": distilled})

    def _method(self) -> str:
        if self.teacher_student_calls is not None:
            return (f"SFD, second round (one DDIM jump per student step onto the teacher student's own DDIM steps "
                    f"over {self.config.teacher_spacing})")
        return ("SFD (one DDIM jump per student step onto the teacher's DPM-Solver++(3M) solution"
                + (f" over its spacing {self.config.teacher_spacing})" if self.config.teacher_spacing != ACCURATE
                   else ")"))

    def _load_resume(self) -> None:
        path = self.out_dir / RESUME_FILE
        own = expected_state(self.net)
        expect = {f"{part}.{k}": v for part in ("model", "ema") for k, v in own.items()}
        for i, p in enumerate(self.net.parameters()):  # Adam's moments and step count per parameter
            expect.update({f"opt.{i}.{key}": (tuple(p.shape), "float") for key in OPTIMIZER_MOMENTS})
            expect[f"opt.{i}.step"] = ((), "float")
        expect["rng"] = (tuple(self.gen.get_state().shape), "uint8")
        state = load_resume_state(path, expect, [k for k in expect if k.startswith(("model.", "ema."))] + ["rng"])
        if _but_steps(_normalised(state["info"].get("train_config"))) != _but_steps(self.config.to_dict()):
            raise CheckpointError(f"{path}: saved by a run with other settings; start a new run")
        load_matching(self.net, state["model_state"], str(path))
        load_matching(self.ema, state["ema_state"], str(path))
        self.opt.load_state_dict(state["optimizer_state"])
        self.gen.set_state(state["rng_state"])
        self.step = state["step"]
        self.elapsed = float(state["info"].get("elapsed", 0.0))
        self.run_id = state["info"].get("run_id", self.run_id)
        restore_loss_scale(self.scaler, state["info"].get("loss_scale"), self.notes)
        truncate_log(self.out_dir / LOG_FILE, self.step)
        if self.step > self.config.steps:
            raise DistillError(f"{self.out_dir}: the run is at step {self.step}, past the {self.config.steps} steps asked; "
                               "give a larger total")
        # a new total (the only setting a resume may change): the learning rate's decay follows it
        atomic_write_bytes(self.out_dir / CONFIG_FILE, json.dumps(self._identity(), indent=1).encode())

    def close(self) -> None:
        self._lock.release()

    # --- looking at it ----------------------------------------------------------------------------------------
    def student_bundle(self) -> ModelBundle:
        sched = replace(self.teacher.schedule_config, spacings=()).with_spacing(self.config.spacing_name,
                                                                               self.student_ts)
        meta = {"kind": "ours", "step": self.teacher.meta.get("step"), "dataset": self.teacher.meta.get("dataset"),
                "extra": {"distilled": {"calls": self.config.calls, "guidance": self.config.guidance}}}
        return ModelBundle(self.ema, sched, list(self.teacher.label_names), meta, self.out_dir / MODEL_FILE)

    @torch.no_grad()
    def preview(self, noise: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """The student's images (EMA weights) from `noise` under `context`: DDIM over its timesteps."""
        model = Denoiser(self.ema, self.schedule, context.to(self.device), precision=self.precision)
        return sample_ddim(model, noise.to(self.device), self.student_ts)

    @torch.no_grad()
    def teacher_preview(self, noise: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """The teacher's images from the same noise: its solver over the pool's grid."""
        model = Denoiser(self.teacher.net, self.schedule, context.to(self.device), guidance=self.config.guidance,
                         precision=self.precision)
        grid = teacher_timesteps(self.schedule, self.student_ts, self.config.teacher_calls, self.config.teacher_spacing)
        return self.teacher_solver(model, noise.to(self.device), grid)


def _normalised(saved) -> dict | None:
    """A saved distill config as this version writes it: fields it lacks (written before they existed) take
    their values of that time (teacher_spacing: the accurate solution); None when it cannot be read."""
    if not isinstance(saved, dict):
        return None
    try:
        return DistillConfig.from_saved(saved).to_dict()
    except (TypeError, ValueError):
        return None


def _but_steps(config) -> dict | None:
    """A distill config without its step count: what a resumed run must keep."""
    return {k: v for k, v in config.items() if k != "steps"} if isinstance(config, dict) else None


def preview_inputs(teacher: ModelBundle, per_label: int = 1, seed: int = 777) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed noise and one-hot contexts for the teacher-vs-student preview row(s)."""
    c = teacher.net.config
    k = c.n_cfeat
    ctx = torch.as_tensor(np.repeat(np.eye(k, dtype=np.float32), per_label, axis=0))
    return initial_noise(len(ctx), (c.in_channels, c.height, c.height), seed, "cpu"), ctx
