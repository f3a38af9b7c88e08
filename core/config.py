"""Training settings as one list of fields: the dataclass, its validation, the CLI's flags and the app's
form are all built from TRAIN_FIELDS. No torch, no numpy: the window imports this before torch loads.

Adding a training option is one `ConfigField` entry here plus its use in the trainer; the form row, the
`--flag`, the type check and the range check follow from the entry.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from .catalog import (BATCHNORM_MODES, LOSS_WEIGHTINGS, LR_SCHEDULES, MIN_SNR_GAMMA, NETWORK_SUMMARY, NETWORKS,
                      NEW_LABEL_INITS, OPTIMIZERS, PRECISIONS, PREDICTION_SUMMARY, PREDICTIONS, SCHEDULE_KINDS,
                      SCHEDULE_SUMMARY, T_DEFAULT, check_field_types, config_dict)

MAX_STEPS = 10**9


@dataclass(frozen=True)
class ConfigField:
    """One setting: its type and default, the rule it must keep, and how the form and the CLI show it."""

    key: str  # the dataclass field
    type: type  # int, float, str or bool
    default: Any
    valid: Callable[[Any], bool] | None = None  # the value rule; None = any value of the type
    rule: str = ""  # the message when `valid` fails, e.g. "steps must be from 1 to ..."
    choices: tuple = ()  # a str field limited to these (the rule is then written for it)
    name: str = ""  # words for messages ("lr schedule"); default: the key with spaces
    # The app's form: a row label ("" = not on the form), its help, its group and the spin-box range.
    label: str = ""
    tip: str = ""
    advanced: bool = True
    widget: tuple = ()  # (lo, hi, step) for ints; (lo, hi, step, decimals) for floats
    # The CLI: the flag without dashes ("" = no flag) and its one-line help.
    flag: str = ""
    flag_help: str | None = None
    unit: str = ""

    @property
    def words(self) -> str:
        return self.name or self.key.replace("_", " ")

    def check(self, value) -> str | None:
        """None when `value` keeps the rule, else the message."""
        if self.choices and value not in self.choices:
            return f"{self.words} must be one of {', '.join(self.choices)}"
        if self.valid is not None and not self.valid(value):
            return self.rule or f"{self.words} is out of range: {value!r}"
        return None


def _choice_tip(intro: str, summary: dict[str, str]) -> str:
    return intro + " " + " ".join(f"'{k}': {v}." for k, v in summary.items())


TRAIN_FIELDS: tuple[ConfigField, ...] = (
    ConfigField("network", str, "course", choices=NETWORKS,
                label="Network", advanced=False,
                tip=_choice_tip("Which U-Net learns; the desk network draws its labels more faithfully.",
                                NETWORK_SUMMARY),
                flag="network", flag_help="course: the lessons' ContextUnet; desk: an ADM-style U-Net whose every "
                                          "block is steered by the label, with attention at 8 and 4 px"),
    ConfigField("n_feat", int, 32, lambda v: 8 <= v <= 1024 and v % 8 == 0,
                "network width (n_feat) must be a multiple of 8 from 8 to 1024",
                label="Network width", advanced=False, widget=(8, 256, 8),
                tip="How big the network is. A bigger network can learn finer detail but every step takes longer: "
                    "32 learns fastest on a laptop, 64 is the course's size. It goes up in steps of 8.",
                flag="n-feat", flag_help="network width (course: 64)"),
    ConfigField("dropout", float, 0.0, lambda v: 0 <= v < 1, "dropout must be in [0, 1)",
                label="Dropout (desk network)", widget=(0.0, 0.9, 0.05, 2),
                tip="Share of the desk network's inner signals switched off at random while training, so it cannot "
                    "lean on any one of them. 0 suits short runs; 0.1 can help long runs on few images. The course "
                    "network ignores it.",
                flag="dropout", flag_help="desk network: dropout inside its residual blocks (default 0)"),
    ConfigField("steps", int, 3000, lambda v: 1 <= v <= MAX_STEPS, f"steps must be from 1 to {MAX_STEPS:,}",
                label="Training steps", advanced=False, widget=(1, 10_000_000, 100), unit="steps",
                tip="How many optimizer steps to train for. Each step learns from one batch of images. Quick demo: "
                    "2,000 (a few minutes on a CPU); recognisable samples need several thousand.",
                flag="steps", flag_help="optimizer steps"),
    ConfigField("batch_size", int, 100, lambda v: 1 <= v <= 65536, "batch size must be from 1 to 65536",
                label="Batch size", advanced=False, widget=(1, 4096, 10), unit="images",
                tip="Images per step. The course uses 100. Larger batches give smoother learning but each step "
                    "takes longer and needs more memory.",
                flag="batch", flag_help="images per step; under torchrun the global batch, split evenly among the "
                                        "processes (it must divide by their number)"),
    ConfigField("lr", float, 1e-3, lambda v: 0 < v <= 10, "learning rate must be above 0 and at most 10",
                label="Learning rate", advanced=False, widget=(0.00001, 1.0, 0.0001, 5),
                tip="How big each learning step is. 0.001 (the course's) works well with Adam. Too high and the "
                    "loss jumps or becomes NaN; too low and learning crawls.",
                flag="lr", flag_help="peak learning rate"),
    ConfigField("lr_schedule", str, "linear", choices=LR_SCHEDULES, name="lr schedule",
                label="Learning-rate decay",
                tip="How the learning rate changes during the run: 'linear' falls to zero at the end (the "
                    "course's), 'cosine' eases down, 'constant' never changes.",
                flag="lr-schedule"),
    ConfigField("warmup_steps", int, 0, lambda v: 0 <= v <= MAX_STEPS, "warm-up steps must be 0 or more",
                label="Warm-up steps", widget=(0, 1_000_000, 50), unit="steps",
                tip="Steps at the start during which the learning rate ramps up from zero. 0 is fine for this "
                    "small network; a few hundred can help large learning rates."),
    ConfigField("optimizer", str, "adam", choices=OPTIMIZERS,
                label="Optimizer",
                tip="'adam' is the course's. 'adamw' is Adam with decoupled weight decay (only differs when weight "
                    "decay is above 0)."),
    ConfigField("weight_decay", float, 0.0, lambda v: v >= 0, "weight decay must be 0 or more",
                label="Weight decay", widget=(0.0, 1.0, 0.001, 4),
                tip="Pulls weights gently towards zero to reduce overfitting. 0 (the course's) is fine for these "
                    "data sets; 0.01 is a common value with adamw."),
    ConfigField("context_dropout", float, 0.1, lambda v: 0 <= v < 1, "context dropout must be in [0, 1)",
                label="Context dropout", widget=(0.0, 0.95, 0.05, 2),
                tip="Share of training images shown without their label. This teaches the model to also draw "
                    "without a label, which classifier-free guidance needs. 0.1 (10%) is the usual value."),
    ConfigField("ema_decay", float, 0.999, lambda v: 0 <= v < 1, "EMA decay must be in [0, 1)",
                label="EMA decay", widget=(0.0, 0.9999, 0.001, 4),
                tip="The saved model is a slow-moving average of the trained weights (an exponential moving "
                    "average), which samples more cleanly. 0.999 is typical; it is warmed up automatically so "
                    "short runs are not held back."),
    ConfigField("second_ema_decay", float, 0.0, lambda v: 0 <= v < 1,
                "the second EMA decay must be in [0, 1) (0: none)",
                label="Second EMA decay", widget=(0.0, 0.9999, 0.001, 4),
                tip="Keep a second average of the weights with another decay, saved beside the model as "
                    "model.ema2.safetensors, so the two can be compared after training (Quality tab or bench "
                    "quality) without training twice. 0 keeps none.",
                flag="second-ema", flag_help="also keep an EMA of this decay (model.ema2.safetensors; 0: none)"),
    ConfigField("grad_clip", float, 1.0, lambda v: v >= 0, "gradient clipping must be 0 (off) or more",
                label="Gradient clipping", widget=(0.0, 100.0, 0.1, 2),
                tip="Caps the size of each update (the gradient norm) to keep training stable. 1.0 is a safe "
                    "value; 0 turns clipping off."),
    ConfigField("precision", str, "auto", choices=PRECISIONS,
                label="Precision",
                tip="Number format for the network's arithmetic. 'auto' picks bf16 where the CPU or GPU runs it "
                    "fast (about twice the speed of fp32) and fp32 otherwise. Choose fp32 if the loss becomes NaN.",
                flag="precision", flag_help="auto: bf16 where fast"),
    ConfigField("hflip", bool, True,
                label="Mirror images",
                tip="Randomly flip images left-right while training: doubles the variety of the data for free. "
                    "The built-in sets never mirror an image whose meaning a mirror changes (flags, signs, arrows, "
                    "clocks, writing); turn it off for your own images with text or a meaningful direction."),
    ConfigField("pixel_shift", bool, False,
                label="Shift images by 1 px",
                tip="Randomly move every image by up to one pixel up, down, left or right while training (the edge "
                    "pixels continue, so a white margin stays white), flags and writing included. For images "
                    "taken off-centre; the built-in sets are drawn on one grid, and there it makes the model worse.",
                flag="pixel-shift", flag_help="move every image by up to 1 px at random while training"),
    ConfigField("balance_labels", bool, False,
                flag="balance-labels",
                flag_help="draw images so every label is equally frequent in the batches (on in --preset finetune: "
                          "a new label with a few dozen images is learnt in minutes)"),
    ConfigField("schedule", str, "linear", choices=SCHEDULE_KINDS, name="noise schedule",
                label="Noise schedule",
                tip=_choice_tip(f"How noise is added over the {T_DEFAULT} timesteps.", SCHEDULE_SUMMARY),
                flag="schedule",
                flag_help="noise schedule: linear (the course's), cosine, linear_zsnr (ends in pure noise; needs v "
                          "or x0)"),
    ConfigField("prediction", str, "eps", choices=PREDICTIONS, name="prediction target",
                label="Model predicts",
                tip=_choice_tip("What the network learns to output from a noisy image; v stays well-behaved at "
                                "every noise level, which helps the fast samplers.", PREDICTION_SUMMARY),
                flag="prediction", flag_help="what the network predicts: eps (the course's), v or x0"),
    ConfigField("loss_weighting", str, "uniform", choices=LOSS_WEIGHTINGS,
                label="Loss weighting",
                tip="How much each noise level counts while learning. 'uniform' (the course's) counts them as they "
                    "come; 'min_snr' stops the almost-clean images from dominating, which makes training converge "
                    "several times faster.",
                flag="loss-weighting",
                flag_help="uniform (the course's) or min_snr (min-SNR-gamma, gamma 5: faster convergence)"),
    ConfigField("min_snr_gamma", float, MIN_SNR_GAMMA, lambda v: v > 0, "min-SNR gamma must be positive"),
    ConfigField("seed", int, 0, lambda v: 0 <= v < 2**63, "seed must be from 0 to 2**63 - 1",
                label="Random seed", widget=(0, 2**31 - 1, 1),
                tip="Same seed, same data set and same settings give the same run. Change it to get a different "
                    "model from the same settings.",
                flag="seed"),
    ConfigField("init", str, ""),  # fine-tune from this checkpoint's weights; "" = from scratch
    ConfigField("new_label_init", str, "zero", choices=NEW_LABEL_INITS),
    # Fine-tuning, "label first" (the textual-inversion idea, Gal et al. 2022): the first steps train only the
    # new labels' context inputs, the network frozen, at their own learning rate; then the whole network.
    ConfigField("label_first_steps", int, 0, lambda v: 0 <= v <= MAX_STEPS, "label-first steps must be 0 or more",
                label="Label-first steps", widget=(0, 100_000, 50), unit="steps",
                tip="Fine-tuning only: steps at the start that teach only the new labels' inputs, the rest of the "
                    "network frozen, so the new label finds its place before the network changes. 0 turns it "
                    "off. Counted in the training steps.",
                flag="label-first-steps",
                flag_help="fine-tune: the first N steps train only the new labels' inputs (network frozen)"),
    ConfigField("label_first_lr", float, 1e-2, lambda v: 0 < v <= 10, "label-first learning rate must be above 0",
                label="Label-first learning rate", widget=(0.0001, 1.0, 0.001, 4),
                tip="The learning rate of the label-first steps (only a few hundred numbers are trained, so it "
                    "can be much higher than the network's).",
                flag="label-first-lr"),
    # Fine-tuning: the new labels' own images, trained where it pays (each measured: docs/app.md, teach section).
    ConfigField("new_label_noise_bias", float, 0.0, lambda v: 0 <= v <= 10,
                "new-label noise bias must be from 0 to 10",
                label="New-label noise bias", widget=(0.0, 10.0, 0.5, 1),
                tip="Fine-tuning only: the new labels' images are trained more often at mid and high noise, where "
                    "a picture's class and shape are decided. 0 draws their noise levels uniformly, like every "
                    "other image's; b draws t/T with density (b + 1)·s^b, so 1 rises linearly towards pure noise.",
                flag="new-label-noise-bias",
                flag_help="fine-tune: draw the new labels' noise levels towards high noise (0 = uniform, 1 = linear)"),
    ConfigField("new_label_augment", bool, False,
                label="Augment new labels",
                tip="Fine-tuning only: every time a new label's image is drawn it is shifted by up to one pixel "
                    "and its colours are nudged slightly (white stays white), so a few dozen images go further. "
                    "Mirroring follows 'Mirror images' as for every image.",
                flag="new-label-augment",
                flag_help="fine-tune: shift the new labels' images by up to 1 px and jitter their colours"),
    ConfigField("new_label_share", float, 0.0, lambda v: 0 <= v < 1, "new-label share must be from 0 to below 1",
                label="New-label share", widget=(0.0, 0.95, 0.05, 2),
                tip="Fine-tuning only: the share of every batch drawn from the new labels' images; the rest are the "
                    "labels the model already knew (replay, so they do not drift). 0 leaves the share to 'Balance "
                    "labels' (one label's share each).",
                flag="new-label-share",
                flag_help="fine-tune: the share of each batch drawn from the new labels' images (0 = as balanced)"),
    ConfigField("keep_old_labels", bool, False,
                label="Keep old labels",
                tip="Fine-tuning only: the old labels' images in each batch are trained towards what the model you "
                    "started from predicts for them, not towards the images themselves, so the labels it knew (and "
                    "'no label') stay as they were while the new ones are learnt. Costs a little time per step.",
                flag="keep-old-labels",
                flag_help="fine-tune: train the old labels' images towards the starting model's own predictions"),
    ConfigField("checkpoint_every", int, 500, lambda v: 1 <= v <= MAX_STEPS, "checkpoint every must be at least 1 step",
                label="Save every (steps)", widget=(1, 1_000_000, 100), unit="steps",
                tip="How often the model is saved to the run folder automatically. A crash or power cut loses at "
                    "most this many steps.",
                flag="checkpoint-every"),
    # read the loss back every k steps; 0 = every step on CPU, every 10 on CUDA
    ConfigField("log_every", int, 0, lambda v: 0 <= v <= MAX_STEPS, "log every must be 0 (automatic) or more"),
    ConfigField("batchnorm", str, "per_rank", choices=BATCHNORM_MODES,
                flag="batchnorm",
                flag_help="under torchrun: BatchNorm statistics of each process's share of the batch (per_rank, the "
                          "default) or of the whole batch (global: one all-reduce per BatchNorm layer)"),
)

# Rules between fields: (is the combination fine?, the message).
TRAIN_RULES: tuple[tuple[Callable[[Any], bool], str], ...] = (
    (lambda c: not (c.schedule == "linear_zsnr" and c.prediction == "eps"),
     "the linear_zsnr schedule ends in pure noise, where eps says nothing about the image: use prediction v or x0"),
)


def make_config_class(name: str, spec: Sequence[ConfigField], rules=(), doc: str = "") -> type:
    """A frozen dataclass with one field per entry of `spec`, validated on construction (types, then each
    field's rule, then `rules`), with to_dict() and from_dict() (unknown keys of a file are ignored)."""
    keys = {f.key for f in spec}

    def __post_init__(self):
        values = dataclasses.asdict(self)
        check_field_types(self)  # the type check every config dataclass shares
        for f in spec:
            msg = f.check(values[f.key])
            if msg:
                raise ValueError(msg)
        for ok, msg in rules:
            if not ok(self):
                raise ValueError(msg)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        return cls(**{k: v for k, v in config_dict(d, "train_config").items() if k in keys})

    cls = dataclasses.make_dataclass(
        name, [(f.key, f.type, dataclasses.field(default=f.default)) for f in spec], frozen=True,
        namespace={"__post_init__": __post_init__, "to_dict": to_dict, "from_dict": from_dict,
                   "__doc__": doc, "FIELDS": tuple(spec)})
    cls.__module__ = __name__
    return cls


TrainConfig = make_config_class(
    "TrainConfig", TRAIN_FIELDS, TRAIN_RULES,
    "Hyperparameters of a run; saved in every checkpoint and bound to the app's training form (TRAIN_FIELDS).")


TRAIN_PRESETS: dict[str, Any] = {
    # Minutes on a laptop CPU: the small width reaches a lower loss per wall-minute, and v-prediction on
    # the zero-terminal-SNR schedule with min-SNR weighting is the recipe of the shipped model
    # (docs/recipes.md): it trains faster and lets 10-20-call samplers keep up with DDPM. The desk network,
    # as the shipped model: at equal CPU time (10 and 25 minutes, two seeds) it drew its labels far better
    # than the course network (feature-FID 2-4x lower, label accuracy 0.06-0.16 higher), for 1.15x the
    # step time in fp32.
    "quick": TrainConfig(network="desk", n_feat=32, steps=2000, batch_size=100, lr=1e-3, prediction="v",
                         schedule="linear_zsnr", loss_weighting="min_snr"),
    # The course recipe: the lessons' network, objective (eps, linear schedule, plain MSE) and optimiser;
    # the lessons' 32 epochs of 89k sprites are ~28k steps.
    "course": TrainConfig(n_feat=64, steps=10000, batch_size=100, lr=1e-3),
    # "Teach the model a new label": a few minutes from the shipped model (--init); n_feat, schedule and
    # target come from the checkpoint. A lower, briefly warmed-up learning rate keeps what it knew.
    # Label-balanced batches: a new label with 40 of 3,800 images would be ~1 image of a batch of 100; and
    # 60% of every batch is the new labels' images, the rest replays the old labels (balanced) trained towards
    # the starting model's own predictions (keep_old_labels), so they stay as they were. The first 100 steps
    # move only the new labels' inputs (label first). 270 steps: three minutes on an idle 2-core AVX2 CPU.
    # Each part measured: docs/app.md, "What the fine-tune achieves".
    "finetune": TrainConfig(n_feat=32, steps=270, batch_size=100, lr=3e-4, warmup_steps=50, prediction="v",
                            schedule="linear_zsnr", loss_weighting="min_snr", checkpoint_every=100,
                            balance_labels=True, new_label_init="nearest", label_first_steps=100,
                            new_label_share=0.6, keep_old_labels=True),
    # For tests and smoke checks.
    "tiny": TrainConfig(n_feat=8, steps=50, batch_size=16, lr=2e-3, checkpoint_every=25),
}


def preset_dicts() -> dict[str, dict]:
    """{'quick': {...}, 'course': ..., ...}: the presets as the form's values."""
    return {k: c.to_dict() for k, c in TRAIN_PRESETS.items()}


# --- the CLI's side: flags from the same list ---------------------------------------------------------
def add_config_flags(parser, spec: Sequence[ConfigField] = TRAIN_FIELDS) -> None:
    """One `--flag` per field that has one; every default None, so an unset flag leaves the preset alone."""
    import argparse

    for f in spec:
        if not f.flag:
            continue
        dest = f.flag.replace("-", "_")
        if f.type is bool:
            parser.add_argument(f"--{f.flag}", dest=dest, action=argparse.BooleanOptionalAction, default=None,
                                help=f.flag_help)
        elif f.choices:
            parser.add_argument(f"--{f.flag}", dest=dest, choices=list(f.choices), help=f.flag_help)
        else:
            parser.add_argument(f"--{f.flag}", dest=dest, type=f.type, help=f.flag_help)


def flag_fields(spec: Sequence[ConfigField] = TRAIN_FIELDS) -> dict[str, str]:
    """{argparse dest: field key} of the fields that have a flag."""
    return {f.flag.replace("-", "_"): f.key for f in spec if f.flag}


def form_fields(spec: Sequence[ConfigField] = TRAIN_FIELDS) -> list[ConfigField]:
    """The fields the app's form shows, in order."""
    return [f for f in spec if f.label]
