"""Continuing a run exactly: the Trainer's resume (weights, EMA, optimizer, random streams, the log cut back
to the commit) and the repair of a model file a crash left older, as a mixin of core.training.Trainer."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import load_file

from .. import distributed
from ..catalog import DIVERGED_FILE, LOG_FILE, MODEL_FILE, RESUME_FILE
from ..checkpoint import CheckpointError, load_matching, load_resume_state, read_metadata, read_resume_info
from ..config import MAX_STEPS, TrainConfig
from ..errors import UserError
from ..schema import Int, Obj, Str, read_json_file
from ..tensors import expected_state
from .runlog import truncate_log

# What Trainer._diverged writes; the reason is shown cut to its first 200 characters.
DIVERGED_NOTE = Obj({"step": Int(0, MAX_STEPS), "saved_step": Int(0, MAX_STEPS), "reason": Str(100_000)},
                    optional=("saved_step",))
OPTIMIZER_MOMENTS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")  # Adam's per-parameter tensors (amsgrad: the max)


def loss_scale_state(scaler: torch.amp.GradScaler) -> dict | None:
    """fp16's loss scale and its count of clean steps, for a resume file's info (None without loss scaling)."""
    if not scaler.is_enabled():
        return None
    state = scaler.state_dict()
    return {"scale": state["scale"], "growth_tracker": state["_growth_tracker"]}


def restore_loss_scale(scaler: torch.amp.GradScaler, saved: dict | None, notes: list[str]) -> None:
    """Continue fp16's loss scale where the run stopped (`saved`: the resume info's, checked by its schema), so
    that a resumed run does not skip steps finding it again; a file saved in another precision has none, and
    the scale starts from the default, with a note."""
    if not scaler.is_enabled():
        return
    if not saved:
        notes.append("the resume file held no fp16 loss scale; it starts again from the default")
        return
    state = scaler.state_dict()
    state.update(scale=float(saved["scale"]), _growth_tracker=int(saved["growth_tracker"]))
    scaler.load_state_dict(state)


def diverged_note(out_dir: Path) -> str:
    """Why the run in out_dir stopped when it stopped because it diverged ("at step N (reason)"), "" when it
    did not; "(its note is unreadable)" for a damaged marker (the file is untrusted)."""
    marker = Path(out_dir) / DIVERGED_FILE
    if not marker.is_file():
        return ""
    try:
        info = read_json_file(marker, max_bytes=1 << 20, max_depth=4, schema=DIVERGED_NOTE)
    except (OSError, UserError):
        return "(its note is unreadable)"
    return f"at step {info['step']} ({' '.join(info['reason'].split())[:200]})"


class DivergedRunError(UserError, ValueError):
    """Resuming a run that stopped because it diverged, without --force."""


class ResumeMixin:
    """The resume half of Trainer (which provides net, ema, opt, gen, rank_gen, dist, config, notes...)."""

    @classmethod
    def from_run(cls, dataset, out_dir: str | Path, *, device: str = "auto", steps: int | None = None,
                 force: bool = False):
        """Resume the run in `out_dir` with its saved config (optionally extending the step count). A run that
        stopped because it diverged is refused unless `force` (see _check_not_diverged)."""
        source, saved = _saved_train_config(Path(out_dir))
        try:
            config = TrainConfig.from_dict(saved)
        except ValueError as e:
            raise CheckpointError(f"{source}: its train_config cannot be used ({e})") from None
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
        state = load_resume_state(path, *self._resume_expectations())
        self._check_optimizer_state(path, state["optimizer_state"])
        info = state["info"]
        fp = info.get("dataset_fingerprint")
        if fp and fp != self.dataset.fingerprint():
            raise ValueError(f"{self.out_dir}: this run was trained on another data set ({info.get('dataset')})")
        load_matching(self.net, state["model_state"], str(path))
        self.step = state["step"]
        load_matching(self.ema, state["ema_state"] or self._legacy_ema(), str(path))
        if self.ema2 is not None:
            if state["ema2_state"]:
                load_matching(self.ema2, state["ema2_state"], str(path))
            else:  # written before the run kept a second EMA: it starts from the first
                self.ema2.load_state_dict(self.ema.state_dict())
                self.notes.append(f"{RESUME_FILE} held no second EMA; it starts from the EMA of step {self.step}")
        self.opt.load_state_dict(state["optimizer_state"])
        self.gen.set_state(state["rng_state"])
        self._resume_rank_generator(info)
        self.elapsed = float(info.get("elapsed", 0.0))
        self.run_id = info.get("run_id", self.run_id)
        restore_loss_scale(self.scaler, info.get("loss_scale"), self.notes)
        if self._in_label_first():
            self.notes.append("resumed inside the label-first steps: their optimizer starts afresh")
        self._saved_step = self.step
        if self.is_main:
            truncate_log(self.out_dir / LOG_FILE, self.step)
            self._repair_model_file()

    def _resume_expectations(self) -> tuple[dict, list[str]]:
        """({tensor name: (shape, kind)} a resume file of this run may hold, the names it must hold): weights and
        EMA (and second EMA) of this network, Adam's state per parameter (indexed as torch numbers them), this generator's state."""
        own = expected_state(self.net)
        parts = ("model", "ema", "ema2") if self.ema2 is not None else ("model", "ema")
        expect = {f"{part}.{k}": v for part in parts for k, v in own.items()}
        params = [p for group in self.opt.param_groups for p in group["params"]]
        for i, p in enumerate(params):
            expect.update({f"opt.{i}.{key}": (tuple(p.shape), "float") for key in OPTIMIZER_MOMENTS})
            expect[f"opt.{i}.step"] = ((), "float")
        expect["rng"] = (tuple(self.gen.get_state().shape), "uint8", "the random generator's state is not one of "
                         f"{self.device.type}'s: a run continues on the kind of device it was saved on (--device)")
        return expect, [k for k in expect if k.startswith("model.")] + ["rng"]

    def _check_optimizer_state(self, path: Path, opt_state: dict) -> None:
        """The saved parameter groups number this optimizer's parameters as torch does (0, 1, ... across groups),
        and the scalar state names only those parameters."""
        groups, start, want = opt_state["param_groups"], 0, []
        for group in self.opt.param_groups:
            want.append(list(range(start, start + len(group["params"]))))
            start += len(group["params"])
        if [g["params"] for g in groups] != want:
            raise CheckpointError(f"{path}: the optimizer's parameter groups do not match this network "
                                  f"({len(groups)} group(s) of {[len(g['params']) for g in groups][:4]} parameters, "
                                  f"expected {[len(w) for w in want]}); the file is damaged or from another run")
        stray = next((i for i in opt_state["state"] if i >= start), None)
        if stray is not None:
            raise CheckpointError(f"{path}: optimizer state for parameter {stray}, but the network has {start}; the "
                                  "file is damaged or from another run")

    def _resume_rank_generator(self, info: dict) -> None:
        """Same number of processes: each rank continues its own noise stream. Another number: the weights, EMA,
        optimizer and image order continue exactly, the noise, timesteps and flips are drawn afresh (said in a note)."""
        saved_world = int(info.get("world_size", 1))
        world = self.dist.world_size if self.dist else 1
        if saved_world == world:
            if self.dist:
                self.rank_gen.set_state(self._saved_rank_state(info))
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

    def _saved_rank_state(self, info: dict) -> torch.Tensor:
        """This rank's generator state from the resume info, checked against the state of a generator here."""
        states = info.get("rank_rng_states") or []
        want = self.rank_gen.get_state()
        try:
            state = distributed.unpack_state(states[self.dist.rank])
        except (IndexError, ValueError):  # too few ranks' states, or not base64
            state = None
        if state is None or state.shape != want.shape:
            raise CheckpointError(f"{self.out_dir / RESUME_FILE}: the random state of training process "
                                  f"{self.dist.rank} is missing or damaged; the run cannot continue exactly")
        return state

    def _legacy_ema(self) -> dict:
        """EMA of a resume file written before it held one: model.safetensors, if it is from the same step."""
        model = self.out_dir / MODEL_FILE
        model_step = read_metadata(model)["step"] if model.is_file() else None
        if model_step != self.step:
            raise CheckpointError(f"{self.out_dir}: {MODEL_FILE} is from step {model_step} but {RESUME_FILE} from "
                                  f"step {self.step} (a crash between the two writes); the run cannot continue exactly")
        return load_file(str(model))

    def _repair_model_file(self) -> None:
        """A crash after the resume commit can leave model.safetensors older (or missing): re-derive it. A damaged
        one is re-derived too: the resume file is the run's commit, the model file is made from it."""
        model = self.out_dir / MODEL_FILE
        damage = ""
        try:
            meta = read_metadata(model) if model.is_file() else {"step": None, "extra": {}}
        except CheckpointError as e:
            meta, damage = {"step": None, "extra": {}}, str(e).replace(f"{model}: ", "").replace(f"{model} ", "")
        other_run = meta["extra"].get("run_id", self.run_id) != self.run_id
        if meta["step"] != self.step or other_run:
            self._save_model()
            why = (f"was unreadable ({damage[:200]})" if damage else "belonged to another run" if other_run
                   else f"was from step {meta['step']}")
            self.notes.append(f"{MODEL_FILE} {why}; rewrote it from the resume state of step {self.step}")


def _saved_train_config(out_dir: Path) -> tuple[Path, dict]:
    """(the file it is in, the run's TrainConfig as saved): the resume file (newer runs), else the model file."""
    resume = out_dir / RESUME_FILE
    if resume.is_file():
        cfg = read_resume_info(resume).get("train_config")  # header only: the tensors are read once, later
        if cfg:
            return resume, cfg
    return out_dir / MODEL_FILE, read_metadata(out_dir / MODEL_FILE)["train_config"]
