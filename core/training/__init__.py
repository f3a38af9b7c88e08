"""Training: the DDPM objective (eps, v or x0 target; uniform or min-SNR weighting), the Trainer that runs it
in a run folder, fine-tuning's label surgery and the loss log.

    objective.py  learning-rate and EMA schedules, loss weights, label-balanced drawing
    trainer.py    Trainer: one run (lock, steps, EMA, checkpoints, DDP)
    resume.py     continuing a run exactly, repairing what a crash left
    finetune.py   a checkpoint's weights for a data set with other labels
    runlog.py     loss.csv
The settings (TrainConfig, the presets) live in core.config, which loads no torch.
"""
from ..catalog import LOG_FILE, MODEL_FILE, RESUME_FILE
from ..config import MAX_STEPS, TRAIN_PRESETS, TrainConfig
from .finetune import CONTEXT_INPUT_KEYS, remap_context_inputs, start_new_labels_nearest
from .objective import ema_decay_at, label_balanced_weights, loss_weights, lr_at
from .runlog import read_loss_log
from ..samplers import preview_grid
from .trainer import StepMetrics, Trainer, TrainingDiverged

__all__ = ["CONTEXT_INPUT_KEYS", "LOG_FILE", "MAX_STEPS", "MODEL_FILE", "RESUME_FILE", "StepMetrics", "TRAIN_PRESETS",
           "TrainConfig", "Trainer", "TrainingDiverged", "ema_decay_at", "label_balanced_weights", "loss_weights",
           "lr_at", "preview_grid", "read_loss_log", "remap_context_inputs", "start_new_labels_nearest"]
