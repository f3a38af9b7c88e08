"""Fine-tuning: a checkpoint's weights for a data set with other labels (matched by name), and new labels
started from the known label the model finds nearest."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ..checkpoint import CheckpointError, read_metadata
from ..schedule import Schedule, ScheduleConfig
from ..unet import UNetConfig, build_network


def read_init(config, dataset) -> tuple[object, dict, list[str]]:
    """Fine-tuning: the checkpoint's width, schedule and target, and its weights with the context
    inputs mapped to this data set's labels by name (see remap_context_inputs). Returns (the config with
    the checkpoint's settings, the weights, notes for the user); the last note is the label report."""
    notes = []
    path = Path(config.init)
    meta = read_metadata(path)
    unet, sched = UNetConfig.from_dict(meta["unet_config"]), ScheduleConfig.from_dict(meta["schedule_config"])
    if unet.height != dataset.size or unet.in_channels != 3:
        raise CheckpointError(f"{path}: this model draws {unet.height}x{unet.height} images; the data set is "
                              f"{dataset.size}x{dataset.size}, so it cannot be fine-tuned on it")
    new = replace(config, network=unet.network, n_feat=unet.n_feat, schedule=sched.kind, prediction=sched.prediction)
    changed = [f"{k} {getattr(config, k)} -> {getattr(new, k)}" for k in ("network", "n_feat", "schedule", "prediction")
               if getattr(config, k) != getattr(new, k)]
    if changed:
        notes.append(f"settings taken from {path.name}: {', '.join(changed)}")
    state, report = remap_context_inputs(read_weights(path), meta["label_names"], list(dataset.label_names))
    if config.new_label_init == "nearest":
        report += start_new_labels_nearest(state, unet, sched, meta["label_names"], dataset)
    notes.append(report)
    return new, state, notes


# The weights that read the context vector, (emb, n_cfeat) each: the course network's two context embeddings,
# DeskUnet's label embedding. A state dict holds those of its own network only.
CONTEXT_INPUT_KEYS = ("contextembed1.model.0.weight", "contextembed2.model.0.weight", "label_embed.weight")


def new_label_columns(old_names: list[str], new_names: list[str]) -> list[int]:
    """Columns of `new_names` the checkpoint did not know (matched by name, case-insensitive)."""
    known = {n.strip().lower() for n in old_names}
    return [j for j, n in enumerate(new_names) if n.strip().lower() not in known]


def taught_labels(config, dataset) -> list[str]:
    """The data set's labels that the model a fine-tune starts from (config.init) did not know; [] for a run from
    scratch, or when that model's file is gone or unreadable (a resumed run whose init was moved)."""
    if not config.init:
        return []
    try:
        old = read_metadata(Path(config.init))["label_names"]
    except (CheckpointError, OSError, KeyError, TypeError):
        return []
    names = list(dataset.label_names)
    return [names[j] for j in new_label_columns(old, names)]


def new_label_rows(config, dataset) -> np.ndarray | None:
    """(N,) bool: the images that carry a label the init model did not know, when the run treats them apart
    (new_label_noise_bias, new_label_augment, new_label_share or keep_old_labels); else None. The init model's file must still be
    there (its label names say which labels are new), so a resumed run does exactly what it did."""
    if not (config.init and (config.new_label_noise_bias > 0 or config.new_label_augment or config.new_label_share > 0
                             or config.keep_old_labels)):
        return None
    cols = _init_new_columns(config, dataset, "the new-label noise bias and augmentation need")
    return (np.asarray(dataset.labels)[:, cols] > 0).any(axis=1) if cols else None


def _init_new_columns(config, dataset, needed_by: str) -> list[int]:
    """The data set's label columns that config.init's model did not know; CheckpointError when that file is
    gone (`needed_by` says what needs its label names)."""
    init = Path(config.init)
    if not init.is_file():
        raise CheckpointError(f"{init}: the model this run fine-tunes is gone; {needed_by} its label names")
    return new_label_columns(read_metadata(init)["label_names"], list(dataset.label_names))


def context_input_params(net) -> list:
    """The parameters that read the context vector (CONTEXT_INPUT_KEYS present in this network)."""
    named = dict(net.named_parameters())
    return [named[k] for k in CONTEXT_INPUT_KEYS if k in named]


def remap_context_inputs(state: dict, old_names: list[str], new_names: list[str]) -> tuple[dict, str]:
    """A checkpoint's weights for a data set with other labels: one context input column per new label,
    matched by name (case-insensitive). A label the model did not know starts with zero weights, so for
    every known label the network's output is exactly what it was (a new label starts out as "no
    label"); labels not in the data set lose their column. Returns (state, a one-line report)."""
    index = {n.strip().lower(): i for i, n in enumerate(old_names)}
    cols = [index.get(n.strip().lower()) for n in new_names] or [None]  # unlabelled: one zero input
    out = dict(state)
    for key in (k for k in CONTEXT_INPUT_KEYS if k in state):
        w = state[key]  # (emb, L_old)
        new = torch.zeros(w.shape[0], len(cols), dtype=w.dtype)
        for j, i in enumerate(cols):
            if i is not None:
                new[:, j] = w[:, i]
        out[key] = new
    kept = [n for n, i in zip(new_names, cols) if i is not None]
    added = [n for n, i in zip(new_names, cols) if i is None]
    dropped = [n for n in old_names if n.strip().lower() not in {m.strip().lower() for m in new_names}]
    parts = [f"kept {len(kept)} label(s)"] + ([f"new: {', '.join(added)}"] if added else []) + \
            ([f"dropped: {', '.join(dropped)}"] if dropped else [])
    return out, "fine-tuning: " + "; ".join(parts)


def start_new_labels_nearest(state: dict, unet: UNetConfig, sched: ScheduleConfig, old_names: list[str],
                             dataset, *, max_images: int = 64, seed: int = 0) -> str:
    """Give each new label the context inputs of the known label under which the checkpoint denoises that
    label's images best (lowest x0 error at a few noise levels, fixed noise: the diffusion model as its
    own zero-shot classifier). Known labels keep their inputs, so their outputs are unchanged; the new
    label starts as its nearest known label and fine-tuning specialises it. Edits `state`; returns
    the report's addition, e.g. "; fruit starts as food"."""
    from ..samplers import Denoiser

    known = {n.strip().lower() for n in old_names}
    names = list(dataset.label_names)
    known_cols = [j for j, n in enumerate(names) if n.strip().lower() in known]
    new_cols = [j for j, n in enumerate(names) if j not in known_cols]
    if not new_cols or not known_cols:
        return ""
    net = build_network(replace(unet, n_cfeat=len(names))).eval()
    net.load_state_dict(state)
    schedule = Schedule(sched)
    g = torch.Generator().manual_seed(seed)
    parts = []
    for j in new_cols:
        rows = np.flatnonzero(dataset.labels[:, j] > 0)[:max_images]
        if rows.size == 0:
            continue
        x0 = dataset.subset(rows).to_tensor()  # (n, 3, H, W)
        x_ts = []  # the same noised images for every candidate label
        for t in (schedule.T // 5, 2 * schedule.T // 5, 3 * schedule.T // 5):
            ab = float(schedule.ab_t[t])
            x_ts.append((t, ab ** 0.5 * x0 + (1 - ab) ** 0.5 * torch.randn(x0.shape, generator=g)))
        errors = torch.zeros(len(known_cols))
        with torch.no_grad():
            for k, col in enumerate(known_cols):
                c = torch.zeros(len(rows), len(names))
                c[:, col] = 1
                model = Denoiser(net, schedule, c)
                for t, x_t in x_ts:
                    errors[k] += (model.predict(x_t, float(t))[1] - x0).pow(2).mean()
        best = known_cols[int(errors.argmin())]
        for key in (k for k in CONTEXT_INPUT_KEYS if k in state):
            state[key][:, j] = state[key][:, best]
        parts.append(f"{names[j]} starts as {names[best]}")
    return "; " + "; ".join(parts) if parts else ""


def read_weights(path: Path) -> dict:
    from ..checkpoint import load_checkpoint

    return {k: v.detach().clone() for k, v in load_checkpoint(path).net.state_dict().items()}


def label_first_setup(net, cfg, dataset, device, notes: list[str]):
    """(parameters, a (1, L) mask that is 1 on the new labels' columns, optimizer) for a fine-tune's
    label-first steps, or None when it has none (or no label is new; `notes` then says so)."""
    if not (cfg.label_first_steps and cfg.init):
        return None
    cols = _init_new_columns(cfg, dataset, "the label-first steps need")
    if not cols:
        notes.append("label-first steps skipped: the data set has no label the model did not know")
        return None
    params = context_input_params(net)
    keep = torch.zeros(1, params[0].shape[1], device=device)  # 1 on the new labels' columns
    keep[0, cols] = 1.0
    return params, keep, torch.optim.Adam(params, lr=cfg.label_first_lr)


def anchor_network(net, config, dataset, *, fresh: bool):
    """keep_old_labels: a frozen copy of the model a fine-tune started from, in the run's network (`net`, just
    loaded with it when `fresh`), with its context inputs mapped to this data set's labels; None when off, not
    a fine-tune, or no label is new. A resumed run reads config.init again, so it trains exactly as it did."""
    if not (config.init and config.keep_old_labels):
        return None
    if not _init_new_columns(config, dataset, "keeping the old labels needs"):
        return None  # no label is new: the fine-tune is there to change the labels it has
    import copy

    anchor = copy.deepcopy(net)
    if not fresh:
        from ..checkpoint import load_matching

        load_matching(anchor, read_init(config, dataset)[1], config.init)
    return anchor.eval().requires_grad_(False)
