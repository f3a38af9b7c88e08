"""The Train tab's settings box: presets, where training starts from, the TrainConfig form, previews."""
from __future__ import annotations

import json
import math
from pathlib import Path

from PySide6.QtWidgets import QComboBox, QFileDialog, QFormLayout, QGroupBox, QSpinBox, QVBoxLayout

from desktop import engine, settings
from desktop.widgets.config_form import FIELD_KEYS, ConfigForm
from desktop.widgets.common import narrow_combo

START_SHIPPED, START_FILE = "<shipped>", "<file>"
PRESETS = [("quick", "Quick demo (minutes on a laptop CPU)"),
           ("finetune", "Teach the shipped model these labels (fine-tune, minutes)"),
           ("course", "Course recipe (n_feat 64, eps, as in the lessons)"),
           ("custom", "Custom")]


class TrainSettingsBox(QGroupBox):
    """Presets, start-from and the form; `form.values()` feed TrainConfig(**values). Enabled by set_presets()."""

    def __init__(self, parent=None):
        super().__init__("Settings", parent)
        self.presets: dict[str, dict] = {}
        lay = QVBoxLayout(self)
        self.preset_combo = narrow_combo(QComboBox())
        for key, text in PRESETS:
            self.preset_combo.addItem(text, key)
        self.preset_combo.setToolTip("Ready-made settings. Quick demo trains a small desk network (the shipped "
                                     "model's kind) in minutes on a CPU; Course uses the lessons' network (n_feat "
                                     "64), slower but closer to the course. Changing any value below switches to "
                                     "Custom.")
        self.preset_combo.currentIndexChanged.connect(self._on_preset_changed)
        self.form = ConfigForm()
        self.form.changed.connect(self._on_form_changed)
        self.preview_every = QSpinBox()
        self.preview_every.setRange(0, 1_000_000)
        self.preview_every.setSingleStep(50)
        self.preview_every.setValue(200)
        self.preview_every.setToolTip("Every this many steps, draw a grid of samples (one row per label) from the "
                                      "same fixed noise, so you can watch them sharpen. 0 turns previews off. "
                                      "Each preview costs about as much as a few training steps.")
        self.start_from = narrow_combo(QComboBox())
        self.start_from.addItem("Scratch (a new model)", "")
        self.start_from.addItem("The shipped model (fine-tune)", START_SHIPPED)
        self.start_from.addItem("Another model file…", START_FILE)
        self.start_from.setToolTip("Where training begins. From scratch takes a long time to draw well; starting "
                                   "from the shipped model keeps what it can draw and learns your new or renamed "
                                   "labels in minutes (a new label starts as 'no label').")
        self.start_from.activated.connect(self._on_start_from)
        self._start_file = ""
        row = QFormLayout()
        row.addRow("Preset", self.preset_combo)
        row.addRow("Start from", self.start_from)
        lay.addLayout(row)
        lay.addWidget(self.form)
        prev = QFormLayout()
        prev.addRow("Preview every (steps)", self.preview_every)
        lay.addLayout(prev)
        self.setEnabled(False)  # until the presets (which need torch) have arrived

    def set_presets(self, presets: dict[str, dict]) -> None:
        """Called once torch has loaded: {'quick': TrainConfig dict, 'course': ..., ...}."""
        self.presets = presets
        self.setEnabled(True)
        saved = self.saved_choices()  # the user's settings file: every part is checked before use
        config, preset = saved.get("config"), saved.get("preset")
        if preset == "custom" and isinstance(config, dict) and config:
            self.form.set_values({**presets["quick"], **{k: v for k, v in config.items() if k in presets["quick"]}})
            self.select_preset("custom")
        else:
            self.select_preset(preset if isinstance(preset, str) and preset in presets else "quick", apply=True)
        every = saved.get("preview_every")
        if isinstance(every, int) and not isinstance(every, bool):
            self.preview_every.setValue(every)  # the spin box keeps it within its range

    def select_preset(self, key: str, apply: bool = False) -> None:
        i = self.preset_combo.findData(key)
        self.preset_combo.blockSignals(True)
        self.preset_combo.setCurrentIndex(max(i, 0))
        self.preset_combo.blockSignals(False)
        if apply and key in self.presets:
            self.form.set_values(self.presets[key])

    def _on_preset_changed(self, _index: int) -> None:
        key = self.preset_combo.currentData()
        if key in self.presets:
            self.form.set_values(self.presets[key])
        if key == "finetune":
            self.start_from.setCurrentIndex(self.start_from.findData(START_SHIPPED))
        elif key in self.presets and self.start_from.currentData() == START_SHIPPED:
            self.start_from.setCurrentIndex(0)

    def _on_start_from(self, index: int) -> None:
        if self.start_from.itemData(index) != START_FILE:
            return
        path, _ = QFileDialog.getOpenFileName(self, "Start from a model", str(settings.runs_dir()),
                                              "Diffusion Desk models (*.safetensors)")
        if path:
            self._start_file = path
            self.start_from.setItemText(index, f"Model: {Path(path).parent.name}/{Path(path).name}")
        else:
            self.start_from.setCurrentIndex(0)

    def choose_fine_tune(self) -> None:
        """The fine-tune preset, from the shipped model ('Teach the model these labels')."""
        self.preset_combo.setCurrentIndex(self.preset_combo.findData("finetune"))
        self.start_from.setCurrentIndex(self.start_from.findData(START_SHIPPED))

    def init_checkpoint(self) -> str:
        """The checkpoint a new run starts from ('' = from scratch)."""
        key = self.start_from.currentData()
        if key == START_SHIPPED:
            return engine.default_checkpoint() or ""
        return self._start_file if key == START_FILE else ""

    def _on_form_changed(self) -> None:
        values = self.form.values()
        match = next((k for k, _ in PRESETS if k in self.presets and self._same(values, self.presets[k])), "custom")
        self.select_preset(match)

    @staticmethod
    def _same(values: dict, preset: dict) -> bool:
        for k in FIELD_KEYS:
            a, b = values.get(k), preset.get(k)
            if isinstance(b, float):
                if not math.isclose(float(a), b, rel_tol=1e-6, abs_tol=1e-9):
                    return False
            elif a != b:
                return False
        return True

    def apply_config(self, values: dict) -> None:
        """Fill the form (tests and resuming use it); the preset follows."""
        base = self.presets.get("quick", {})
        self.form.set_values({**base, **values})

    def saved_choices(self) -> dict:
        saved = settings.load_json("train/last")
        return saved if isinstance(saved, dict) else {}

    def save_choices(self) -> None:
        choice = {"preset": self.preset_combo.currentData(), "config": self.form.values(),
                  "preview_every": self.preview_every.value()}
        settings.qsettings().setValue("train/last", json.dumps(choice))
