"""The Trainer: one run in a folder, as a generator of metrics.

`Trainer.run()` yields a `StepMetrics` after every optimizer step, so a CLI or a GUI worker drives
it and can pause (stop iterating), resume (iterate again) or stop (`save()` and drop it) between
steps. Everything that makes a run reproducible -- weights, EMA, optimizer, step, RNG -- is in the
checkpoint, so a resumed run continues the same loss curve. Under torchrun each process runs one Trainer.
"""
from __future__ import annotations

import contextlib
import copy
import json
import statistics
import time
import uuid
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from .. import distributed
from ..catalog import DIVERGED_FILE, LOG_FILE, MODEL_FILE, RESUME_FILE, SECOND_EMA_FILE
from ..checkpoint import (ModelBundle, load_matching, save_checkpoint, save_resume_state)
from ..config import TrainConfig
from ..device import autocast, pick_device, resolve_precision, to_fast_layout
from ..errors import DataError, UserError
from ..memory import check_fits, training_bytes
from ..paths import atomic_write_bytes
from ..runlock import take_run_lock
from ..samplers import preview_grid
from ..schedule import Schedule, ScheduleConfig
from ..unet import UNetConfig, build_network
from .finetune import anchor_network, label_first_setup, new_label_rows, read_init
from .objective import (band_losses, ema_decay_at, label_balanced_weights, loss_weights, lr_at, split_draw,
                        shift_one_pixel, treat_new_labels)
from .resume import ResumeMixin, loss_scale_state
from .runlog import append_log, truncate_log


@dataclass
class StepMetrics:
    step: int
    total_steps: int
    loss: float
    lr: float
    images_per_s: float
    elapsed: float  # seconds of training (pauses excluded)
    band_loss: tuple[float, float, float]  # mean loss at low / mid / high noise (nan where no sample fell)


class TrainingDiverged(UserError, RuntimeError):
    """The loss or the weights became NaN, infinite or exploded; the last good checkpoint on disk was kept."""


EXPLODE_FACTOR = 1e3  # a step loss this many times the running median means the run has diverged
EXPLODE_HISTORY = 200  # steps in that running median
LOG_FLUSH_S = 2.0  # between checkpoints, loss.csv is appended to at most this often


class Trainer(ResumeMixin):
    """One training run in `out_dir` on one data set (see module docstring)."""

    def __init__(self, dataset, config: TrainConfig, out_dir: str | Path, *, device: str = "auto",
                 resume: bool = False, force: bool = False):
        self.out_dir = Path(out_dir)
        self.force = force  # resume a run that stopped because it diverged
        if dataset.n == 0:
            raise DataError(f"{dataset.source or dataset.name}: the data set holds no images; add images before training")
        self.dataset, self.config = dataset, config
        self.notes: list[str] = []  # things the front end should tell the user (a stale lock, a repair)
        self.dist = distributed.from_env()  # None: one process, exactly as without torchrun
        if self.dist and config.batch_size % self.dist.world_size:
            raise ValueError(f"batch size {config.batch_size} does not divide among the {self.dist.world_size} training "
                             f"processes; choose a multiple of {self.dist.world_size}")
        self.is_main = self.dist is None or self.dist.is_main
        self.rank_batch = config.batch_size // (self.dist.world_size if self.dist else 1)
        self.rank_losses: list[float] = []  # with several ranks: this rank's own mean loss of each step last read
        self.device = pick_device(device) if isinstance(device, str) else device
        if self.dist:  # join the others first, so a failure below reaches them as a lost peer, not a hang
            self.device = distributed.start(self.dist, self.device)
        # Fail before any work: a second writer, or no write access (rank 0 alone writes the run folder).
        self._lock = take_run_lock(self.out_dir) if self.is_main else None
        if self._lock is not None and self._lock.note:
            self.notes.append(self._lock.note)
        if self._lock is not None:
            self._remove_crash_residue()
        self._stop_requested = False
        self.run_id = uuid.uuid4().hex[:12]  # shared by the model and resume files of this run
        self._saved_step: int | None = None  # step of the checkpoint on disk
        self._recent = deque(maxlen=EXPLODE_HISTORY)
        init_state = None
        if config.init and not resume:
            config, init_state, notes = read_init(config, dataset)
            self.config = config
            self.notes += notes
            self.init_report = notes[-1]
        self.precision = resolve_precision(config.precision, self.device)
        self.schedule = Schedule(ScheduleConfig(kind=config.schedule, prediction=config.prediction))
        self.unet_config = _network_config(dataset, config)
        check_fits(training_bytes(self.unet_config, self.rank_batch, dataset.n), self.device,
                   f"training this model ({config.network} network, n_feat {config.n_feat}, batch {self.rank_batch}, "
                   f"{dataset.size} px)", "use a smaller --batch or --n-feat (Batch size, Network width in the app)")
        with torch.random.fork_rng(devices=[]):  # weights from the run's seed, global RNG untouched
            torch.manual_seed(config.seed)
            self.net = to_fast_layout(build_network(self.unet_config).to(self.device))
        if init_state is not None:
            load_matching(self.net, init_state, config.init)
        # keep_old_labels: the starting model, frozen; the old labels' rows of a batch are trained towards it.
        self.anchor = anchor_network(self.net, config, dataset, fresh=init_state is not None)
        self.ema = copy.deepcopy(self.net).eval().requires_grad_(False)
        # A second EMA of another length, for choosing the EMA by measurement without training twice.
        self.ema2 = copy.deepcopy(self.ema) if config.second_ema_decay > 0 else None
        if self.dist and config.batchnorm == "global":
            distributed.use_global_batchnorm(self.net)
        # What the step calls: the net itself, or the net in DDP (same parameters, averaged gradients).
        self.model = distributed.wrap(self.dist, self.net, self.device) if self.dist else self.net
        self.opt = self._make_optimizer()
        self._label_first = label_first_setup(self.net, config, dataset, self.device, self.notes)
        # fp16 (a GPU without bf16 in hardware) needs loss scaling; bf16 and fp32 do not.
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.gen = torch.Generator(device=self.device).manual_seed(config.seed)  # with several ranks: images only
        # Noise, timesteps, flips and dropout: the same generator alone, one of (seed, rank) per rank.
        self.rank_gen = self._rank_generator(0) if self.dist else self.gen
        self.step = 0
        self.elapsed = 0.0
        self.x = dataset.to_tensor().to(self.device)  # (N, 3, H, W) in [-1, 1], held in memory once
        labels = dataset.labels if dataset.n_labels else np.zeros((dataset.n, 1), np.float32)
        self.c = torch.as_tensor(labels, dtype=torch.float32).to(self.device)  # (N, max(L, 1))
        self.draw_w = label_balanced_weights(labels).to(self.device) if config.balance_labels else None  # (N,)
        # Images a mirror would change the meaning of (flags, arrows, writing) are never flipped.
        self.mirror_ok = None if dataset.mirror_ok is None else torch.as_tensor(dataset.mirror_ok).to(self.device)
        rows = new_label_rows(self.config, dataset)  # a fine-tune's new-label images, when they are treated apart
        self.new_rows = None if rows is None else torch.as_tensor(rows).to(self.device)  # (N,) bool
        # new_label_share: (old weights, new weights, new rows per process's batch); every process's batch is old
        # rows, then new ones (so each process gets the same mix).
        split = None if rows is None or config.new_label_share == 0 else split_draw(
            self.draw_w, rows, config.new_label_share, self.rank_batch, self.dist.world_size if self.dist else 1)
        self.split = None if split is None else (split[0].to(self.device), split[1].to(self.device), split[2])
        self.ab = self.schedule.ab_t.to(self.device, torch.float32)
        self.loss_w = loss_weights(self.schedule, config.prediction, config.loss_weighting,
                                   config.min_snr_gamma).to(self.device, torch.float32)  # (T+1,)
        self._log_rows: list[list] = []
        self._log_written = time.monotonic()
        if resume:
            self._load_resume()
        elif self.is_main:
            truncate_log(self.out_dir / LOG_FILE, 0)  # rows an earlier, unsaved start left behind

    # --- setup -------------------------------------------------------------------------------------
    def _remove_crash_residue(self) -> None:
        """Temp files of an atomic write that a kill interrupted before its rename (we hold the lock: no
        writer of ours is using them)."""
        stale = [p for name in (MODEL_FILE, RESUME_FILE) for p in self.out_dir.glob(f".{name}.*.tmp") if p.is_file()]
        for p in stale:
            p.unlink(missing_ok=True)
        if stale:
            self.notes.append(f"removed {len(stale)} unfinished temporary file(s) of an interrupted save from "
                              f"{self.out_dir}")
    def _make_optimizer(self):
        cls = torch.optim.AdamW if self.config.optimizer == "adamw" else torch.optim.Adam
        return cls(self.net.parameters(), lr=self.config.lr, weight_decay=self.config.weight_decay)

    def _rank_generator(self, step: int) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(distributed.rank_seed(self.config.seed, self.dist.rank, step))

    # --- one step ------------------------------------------------------------------------------------
    def _batch(self):
        """Random batch with flips and context dropout, drawn from the run's own generator."""
        n, b, g, dev = self.x.shape[0], self.rank_batch, self.rank_gen, self.device
        if self.split is not None:  # exact counts: in each process's slice the old labels' rows, then the new
            w_old, w_new, n_new = self.split
            world, n_old = self.config.batch_size // b, b - n_new
            old = torch.multinomial(w_old, world * n_old, replacement=True, generator=self.gen).view(world, n_old)
            new = torch.multinomial(w_new, world * n_new, replacement=True, generator=self.gen).view(world, n_new)
            idx = torch.cat([old, new], dim=1).reshape(-1)  # the global batch
            self._n_old = n_old
        elif self.draw_w is None:
            idx = torch.randint(0, n, (self.config.batch_size,), generator=self.gen, device=dev)  # the global batch
        else:
            idx = torch.multinomial(self.draw_w, self.config.batch_size, replacement=True, generator=self.gen)
        if self.dist:
            idx = idx[self.dist.rank * b:(self.dist.rank + 1) * b]  # this rank's slice of it
        x0, c = self.x[idx], self.c[idx]
        if self.config.hflip:
            flip = torch.rand(b, generator=g, device=dev) < 0.5
            if self.mirror_ok is not None:
                flip &= self.mirror_ok[idx]
            x0 = torch.where(flip.view(-1, 1, 1, 1), x0.flip(3), x0)
        keep = torch.rand(b, generator=g, device=dev) >= self.config.context_dropout
        c = c * keep.unsqueeze(1)  # dropped rows become the all-zero "no context" vector
        t = torch.randint(1, self.schedule.T + 1, (b,), generator=g, device=dev)
        noise = torch.randn(x0.shape, generator=g, device=dev)
        if self.new_rows is not None:  # drawn last: a run without these options draws exactly what it did
            x0, t = treat_new_labels(x0, t, self.new_rows[idx], self.config, self.schedule.T, g)
            self._batch_new = self.new_rows[idx]  # (B,) bool, on the device: which rows are new labels' images
        if self.config.pixel_shift:  # drawn after everything else, for the same reason
            moved = shift_one_pixel(x0, g)
            if self.new_rows is not None and self.config.new_label_augment:  # those rows are shifted already
                moved = torch.where(self._batch_new.view(-1, 1, 1, 1), x0, moved)
            x0 = moved
        return x0, c, t, noise

    def _train_step(self):
        """One optimizer step; returns the per-sample losses (B,) and timesteps (B,), on the device."""
        x0, c, t, noise = self._batch()
        ab = self.ab[t].view(-1, 1, 1, 1)
        a, s = ab.sqrt(), (1 - ab).sqrt()
        x_t = a * x0 + s * noise  # the correct sqrt(1 - ab) (the course drops the sqrt)
        target = {"eps": noise, "v": a * noise - s * x0, "x0": x0}[self.config.prediction]
        label_first = self._in_label_first()
        if self.anchor is not None and not label_first:  # the old labels' rows: what the starting model predicts
            k = self._n_old if self.split is not None else len(x_t)  # with a split only its old rows need it
            if k:
                with torch.no_grad(), autocast(self.device, self.precision):
                    kept = self.anchor(to_fast_layout(x_t[:k]), t[:k].float() / self.schedule.T, c[:k]).float()
                if self.split is not None:
                    target = torch.cat([kept, target[k:]])
                else:
                    target = torch.where(self._batch_new.view(-1, 1, 1, 1), target, kept)
        opt = self._label_first[2] if label_first else self.opt
        if not label_first:
            for group in self.opt.param_groups:
                group["lr"] = lr_at(self.config, self.step)
        # Under torchrun the forward pass (global BatchNorm) and the backward pass (DDP's gradient all-reduce)
        # talk to the other processes: a peer that died is a PeerLost in one line, not gloo's traceback.
        with distributed.guard(self.dist, "training a step") if self.dist else contextlib.nullcontext():
            with autocast(self.device, self.precision):
                pred = self.model(to_fast_layout(x_t), t.float() / self.schedule.T, c)
            per_sample = (pred.float() - target).pow(2).mean(dim=(1, 2, 3)) * self.loss_w[t]  # (B,)
            self.opt.zero_grad(set_to_none=True)
            self.scaler.scale(per_sample.mean()).backward()
        params = self.net.parameters()
        if label_first:  # only the new labels' columns of the context inputs move
            params, keep, _ = self._label_first
            for p in params:
                p.grad.mul_(keep)  # a product, not a boolean index: no device sync
        if self.config.grad_clip > 0:
            self.scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip)
        self.scaler.step(opt)
        self.scaler.update()
        if self.is_main:  # only rank 0 saves and previews, so only it keeps the EMA
            self._update_ema()
        return per_sample.detach(), t

    def _in_label_first(self) -> bool:
        """True while the current step (self.step, not yet counted) trains only the new labels' inputs."""
        return self._label_first is not None and self.step < self.config.label_first_steps

    @torch.no_grad()
    def _update_ema(self):
        for ema, decay in ((self.ema, self.config.ema_decay), (self.ema2, self.config.second_ema_decay)):
            if ema is None:
                continue
            d = ema_decay_at(decay, self.step)
            torch._foreach_lerp_(list(ema.parameters()), list(self.net.parameters()), 1 - d)
            for eb, b in zip(ema.buffers(), self.net.buffers()):
                eb.copy_(b)  # BatchNorm statistics follow the live model

    # --- the loop --------------------------------------------------------------------------------------
    def run(self) -> Iterator[StepMetrics]:
        """Train until config.steps, yielding metrics after each step (in groups of log_every on CUDA)."""
        log_every = self.config.log_every or (10 if self.device.type == "cuda" else 1)
        pending: list[tuple[torch.Tensor, torch.Tensor, float]] = []
        t_start = time.perf_counter()
        while self.step < self.config.steps:
            losses, ts = self._train_step()
            lr = self.config.label_first_lr if self._in_label_first() else self.opt.param_groups[0]["lr"]
            self.step += 1
            pending.append((losses, ts, lr))
            if len(pending) < log_every and self.step < self.config.steps:
                continue
            now = time.perf_counter()
            dt, t_start = now - t_start, now
            self.elapsed += dt
            yield from self._flush(pending, dt)
            pending = []
            if self._stop_agreed():
                return
            t_start = time.perf_counter()  # time spent by the consumer (or paused) is not training time

    def request_stop(self) -> None:
        """Ask run() to end after the current step (safe from a signal handler); with several processes all
        ranks end at the same step, so their save() calls meet. Then call save()."""
        self._stop_requested = True

    def _stop_agreed(self) -> bool:
        if self.dist:
            return distributed.any_rank(self.dist, self._stop_requested, self.device)
        return self._stop_requested

    def _flush(self, pending, dt: float) -> Iterator[StepMetrics]:
        """Read a group of step losses back from the device (one sync), check them, checkpoint, yield."""
        losses, ts = torch.stack([p[0] for p in pending]).float(), torch.stack([p[1] for p in pending])  # (k, b)
        if self.dist:  # every rank sees every rank's losses: one logged loss, one verdict on NaN and explosions
            losses, ts = distributed.gather(self.dist, losses), distributed.gather(self.dist, ts)  # (k, B)
        losses, ts = losses.cpu(), ts.cpu()  # the one device sync of the group
        if self.dist:  # this rank's own mean loss per step: its slice of the gathered batch
            b, r = self.rank_batch, self.dist.rank
            self.rank_losses = losses[:, r * b:(r + 1) * b].mean(dim=1).tolist()
        if not torch.isfinite(losses).all():
            raise TrainingDiverged(self._diverged(f"the loss became NaN or infinite by step {self.step}"))
        self._check_explosion(losses.mean(dim=1).tolist(), self.step - len(pending) + 1)
        ips = self.config.batch_size * len(pending) / max(dt, 1e-9)
        first = self.step - len(pending) + 1
        for j, (l_row, t_row, lr) in enumerate(zip(losses, ts, (p[2] for p in pending))):
            m = StepMetrics(first + j, self.config.steps, float(l_row.mean()), lr, ips,
                            self.elapsed, band_losses(l_row, t_row, self.schedule.T))
            if self.is_main:
                self._log_rows.append([m.step, f"{m.loss:.6f}", f"{lr:.3e}", f"{ips:.1f}",
                                       *(f"{v:.6f}" for v in m.band_loss)])
            if m.step % self.config.checkpoint_every == 0 or m.step == self.config.steps:
                self.save()
            elif self.is_main and time.monotonic() - self._log_written >= LOG_FLUSH_S:
                self._write_log()  # loss.csv stays live for a follower; rows past the commit are cut on resume
            yield m

    def _check_explosion(self, step_losses: list[float], first_step: int) -> None:
        """Stop when a step's loss is EXPLODE_FACTOR times the running median: finite, but diverging."""
        for k, loss in enumerate(step_losses):
            if len(self._recent) >= 1 and loss > EXPLODE_FACTOR * statistics.median(self._recent):
                raise TrainingDiverged(self._diverged(
                    f"the loss exploded at step {first_step + k} ({loss:.3g}, over {EXPLODE_FACTOR:g} times its "
                    f"recent median {statistics.median(self._recent):.3g})"))
            self._recent.append(loss)

    def _diverged(self, reason: str) -> str:
        if self._saved_step is None:
            kept = "no checkpoint had been saved yet, so there is nothing to resume"
        else:
            kept = f"the last good checkpoint, from step {self._saved_step}, was kept in {self.out_dir}"
        hint = "a lower learning rate" + (" or precision fp32" if self.precision != "fp32" else "")
        message = f"{reason}; training stopped and {kept}. Try {hint}."
        if self.is_main and self._saved_step is not None:  # a resume must not train through it unawares
            try:
                atomic_write_bytes(self.out_dir / DIVERGED_FILE, json.dumps(
                    {"step": self.step, "saved_step": self._saved_step, "reason": reason}).encode())
            except OSError:
                pass  # the message still says what happened; only the resume guard is lost
        return message

    def state_is_finite(self) -> bool:
        """True when weights, EMA and optimizer state hold no NaN or inf and the EMA model's output on a small
        fixed batch is finite too, so a checkpoint kept as "good" samples (one device sync)."""
        tensors = [*self.net.state_dict().values(), *self.ema.state_dict().values(),
                   *(self.ema2.state_dict().values() if self.ema2 is not None else ())]
        for st in self.opt.state.values():
            tensors += [v for v in st.values() if isinstance(v, torch.Tensor)]
        flags = [torch.isfinite(t).all() for t in tensors if t.is_floating_point()]
        cfg = self.unet_config
        g = torch.Generator(device=self.device).manual_seed(0)
        x = torch.randn((2, cfg.in_channels, cfg.height, cfg.height), generator=g, device=self.device)
        with torch.no_grad(), autocast(self.device, self.precision):
            out = self.ema(to_fast_layout(x), torch.tensor([0.9], device=self.device), self.c[:1].expand(2, -1))
        flags.append(torch.isfinite(out).all())
        return bool(torch.stack(flags).all())

    # --- outputs ---------------------------------------------------------------------------------------
    def save(self) -> Path:
        """Write the loss log, then resume.safetensors (the commit: weights, EMA, optimizer, RNG, step), then
        model.safetensors (the EMA for sampling, re-derived on resume if a crash left it behind). Never
        writes non-finite weights: a poisoned state raises TrainingDiverged and the files on disk stay."""
        finite = self.state_is_finite()
        if self.dist:  # only rank 0 keeps the EMA, so the verdict is agreed: no rank waits on one that raised
            finite = not distributed.any_rank(self.dist, not finite, self.device)
        if not finite:
            raise TrainingDiverged(self._diverged(f"the weights or the model's output became NaN or infinite by step {self.step}"))
        info = {"dataset": self.dataset.name, "dataset_fingerprint": self.dataset.fingerprint(), "elapsed": self.elapsed,
                "run_id": self.run_id, "train_config": self.config.to_dict()}
        if self.scaler.is_enabled():
            info["loss_scale"] = loss_scale_state(self.scaler)
        if self.dist:  # all ranks take part; rank 0 writes
            info["world_size"] = self.dist.world_size
            info["rank_rng_states"] = distributed.gather_objects(self.dist, distributed.pack_state(self.rank_gen.get_state()))
            if not self.is_main:
                distributed.barrier(self.dist, "waiting for rank 0 to save")
                self._saved_step = self.step
                return self.out_dir / MODEL_FILE
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._write_log()  # rows past the commit are cut again on resume
        save_resume_state(self.out_dir / RESUME_FILE, model_state=self.net.state_dict(),
                          optimizer_state=self.opt.state_dict(), rng_state=self.gen.get_state(),
                          step=self.step, info=info, ema_state=self.ema.state_dict(),
                          ema2_state=self.ema2.state_dict() if self.ema2 is not None else None)
        path = self._save_model()
        self._saved_step = self.step
        if self.dist:
            distributed.barrier(self.dist, "saving")
        return path

    def close(self, together: bool = True) -> None:
        """Release the run folder's lock (the files stay) and leave the process group: after a run that
        ended normally all ranks leave together; after a failure (`together=False`) at once."""
        if self._lock is not None:
            self._lock.release()
        if self.dist:
            distributed.stop(self.dist if together else None)

    def _save_model(self) -> Path:
        """model.safetensors (the EMA), and model.ema2.safetensors (the second EMA) when the run keeps one."""
        for ema, name, decay in ((self.ema2, SECOND_EMA_FILE, self.config.second_ema_decay),
                                 (self.ema, MODEL_FILE, self.config.ema_decay)):
            if ema is None:
                continue
            path = save_checkpoint(
                self.out_dir / name, ema.state_dict(), unet_config=self.unet_config,
                schedule_config=self.schedule.config, label_names=self.dataset.label_names, dataset=self.dataset.name,
                fingerprint=self.dataset.fingerprint(), step=self.step, precision=self.precision,
                train_config=self.config.to_dict(),
                extra={"elapsed": self.elapsed, "run_id": self.run_id, "ema_decay": decay},
            )
        return path

    def _write_log(self) -> None:
        self._log_written = time.monotonic()
        append_log(self.out_dir / LOG_FILE, self._log_rows)
        self._log_rows = []

    def bundle(self) -> ModelBundle:
        """The EMA model as a sampling-ready bundle (shares weights with the live EMA)."""
        meta = {"kind": "ours", "dataset": self.dataset.name, "step": self.step}
        return ModelBundle(self.ema, self.schedule.config, list(self.dataset.label_names), meta, self.out_dir / MODEL_FILE)

    def preview(self, *, per_label: int = 6, steps: int = 20, seed: int = 1234) -> np.ndarray:
        """A grid of the EMA model from fixed noise, one row per label (see preview_grid)."""
        return preview_grid(self.ema, self.schedule, self.dataset.n_labels, per_label=per_label, steps=steps,
                            seed=seed, precision=self.precision)


def _network_config(dataset, config) -> UNetConfig:
    """The network for this data set: a side it is built for and labels it can take, or a DataError saying so.
    An unlabelled set (L = 0) trains an unconditional model: one context input, always zero."""
    try:
        return UNetConfig(n_feat=config.n_feat, n_cfeat=max(1, dataset.n_labels), height=dataset.size,
                          network=config.network, dropout=config.dropout)
    except ValueError as e:
        raise DataError(f"{dataset.source or dataset.name}: a {config.network} network cannot train on these "
                        f"{dataset.size}x{dataset.size} px images with {dataset.n_labels} label(s) ({e}); resize them "
                        "(--size for a folder) or use fewer labels") from None

