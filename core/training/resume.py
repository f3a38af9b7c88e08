"""Continuing a run exactly: the Trainer's resume (weights, EMA, optimizer, random streams, the log cut back
to the commit) and the repair of a model file a crash left older, as a mixin of core.training.Trainer."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import load_file

from .. import distributed
from ..catalog import DIVERGED_FILE, LOG_FILE, MODEL_FILE, RESUME_FILE
from ..checkpoint import CheckpointError, load_matching, load_resume_state, read_metadata, read_resume_info
from ..config import TrainConfig
from ..errors import UserError
from .runlog import truncate_log


def diverged_note(out_dir: Path) -> str:
    """Why the run in out_dir stopped when it stopped because it diverged ("at step N (reason)"), "" when it
    did not; "(its note is unreadable)" for a damaged marker (the file is untrusted)."""
    marker = Path(out_dir) / DIVERGED_FILE
    if not marker.is_file():
        return ""
    try:
        info = json.loads(marker.read_text())
        return f"at step {int(info['step'])} ({str(info['reason'])[:200]})"
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return "(its note is unreadable)"


class DivergedRunError(UserError, ValueError):
    """Resuming a run that stopped because it diverged, without --force."""


class ResumeMixin:
    """The resume half of Trainer (which provides net, ema, opt, gen, rank_gen, dist, config, notes...)."""

    @classmethod
    def from_run(cls, dataset, out_dir: str | Path, *, device: str = "auto", steps: int | None = None,
                 force: bool = False):
        """Resume the run in `out_dir` with its saved config (optionally extending the step count). A run that
        stopped because it diverged is refused unless `force` (see _check_not_diverged)."""
        config = TrainConfig.from_dict(_saved_train_config(Path(out_dir)))
        if steps is not None:
            config = replace(config, steps=steps)
        return cls(dataset, config, out_dir, device=device, resume=True, force=force)

    def _check_not_diverged(self) -> None:
        """A run that stopped on an exploding or NaN loss would train straight through the same place again."""
        marker = self.out_dir / DIVERGED_FILE
        note = diverged_note(self.out_dir)
        if not note:
            return
        what = f" {note}" if not note.startswith("(") else ""
        if not self.force:
            raise DivergedRunError(
                f"{self.out_dir}: this run stopped because it diverged{what}; resuming would train through the same "
                f"place again. Start a new run from its model with a lower learning rate (--init "
                f"{self.out_dir / MODEL_FILE} --lr ...), or resume anyway with --force")
        marker.unlink(missing_ok=True)
        self.notes.append(f"resumed a run that had diverged{what}, as asked (--force)")

    def _load_resume(self) -> None:
        self._check_not_diverged()
        path = self.out_dir / RESUME_FILE
        state = load_resume_state(path)
        info = state["info"]
        fp = info.get("dataset_fingerprint")
        if fp and fp != self.dataset.fingerprint():
            raise ValueError(f"{self.out_dir}: this run was trained on another data set ({info.get('dataset')})")
        load_matching(self.net, state["model_state"], str(path))
        self.step = state["step"]
        load_matching(self.ema, state["ema_state"] or self._legacy_ema(), str(path))
        self.opt.load_state_dict(state["optimizer_state"])
        self.gen.set_state(state["rng_state"])
        self._resume_rank_generator(info)
        self.elapsed = float(info.get("elapsed", 0.0))
        self.run_id = info.get("run_id", self.run_id)
        if self._label_first is not None and self.step < self.config.label_first_steps:
            self.notes.append("resumed inside the label-first steps: their optimizer starts afresh")
        self._saved_step = self.step
        if self.is_main:
            truncate_log(self.out_dir / LOG_FILE, self.step)
            self._repair_model_file()

    def _resume_rank_generator(self, info: dict) -> None:
        """Same number of processes: each rank continues its own noise stream. Another number: the weights, EMA,
        optimizer and image order continue exactly, the noise, timesteps and flips are drawn afresh (said in a note)."""
        saved_world = int(info.get("world_size", 1))
        world = self.dist.world_size if self.dist else 1
        if saved_world == world:
            if self.dist:
                self.rank_gen.set_state(distributed.unpack_state(info["rank_rng_states"][self.dist.rank]))
            return
        if self.dist:
            self.rank_gen = self._rank_generator(self.step)
        else:  # one process continues a multi-process run: one generator again, from step-dependent seed
            self.rank_gen = self.gen = torch.Generator(device=self.device).manual_seed(
                distributed.rank_seed(self.config.seed, 0, self.step))
        self.notes.append(f"this run was saved with {saved_world} training process(es) and continues with {world}: "
                          f"weights, EMA and optimizer continue exactly, but the random draws (noise, timesteps, "
                          f"flips{'' if self.dist else ', image order'}) from step {self.step} on differ from an "
                          "uninterrupted run")

    def _legacy_ema(self) -> dict:
        """EMA of a resume file written before it held one: model.safetensors, if it is from the same step."""
        model = self.out_dir / MODEL_FILE
        model_step = read_metadata(model)["step"] if model.is_file() else None
        if model_step != self.step:
            raise CheckpointError(f"{self.out_dir}: {MODEL_FILE} is from step {model_step} but {RESUME_FILE} from "
                                  f"step {self.step} (a crash between the two writes); the run cannot continue exactly")
        return load_file(str(model))

    def _repair_model_file(self) -> None:
        """A crash after the resume commit can leave model.safetensors older (or missing): re-derive it."""
        model = self.out_dir / MODEL_FILE
        meta = read_metadata(model) if model.is_file() else {"step": None, "extra": {}}
        other_run = meta["extra"].get("run_id", self.run_id) != self.run_id
        if meta["step"] != self.step or other_run:
            self._save_model()
            why = "belonged to another run" if other_run else f"was from step {meta['step']}"
            self.notes.append(f"{MODEL_FILE} {why}; rewrote it from the resume state of step {self.step}")


def _saved_train_config(out_dir: Path) -> dict:
    """The run's TrainConfig as saved: in the resume file (newer runs), else in the model file."""
    resume = out_dir / RESUME_FILE
    if resume.is_file():
        cfg = read_resume_info(resume).get("train_config")  # header only: the tensors are read once, later
        if cfg:
            return cfg
    return read_metadata(out_dir / MODEL_FILE)["train_config"]
