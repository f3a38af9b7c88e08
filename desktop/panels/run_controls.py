"""Sample & compare's run controls: seed, images per row, what the grids show, add / Run / Cancel.

The panel connects the buttons; the widgets only hold the choices.
"""
from __future__ import annotations

import random

from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QMenu, QPushButton, QSpinBox, QToolButton, QWidget

from desktop import settings
from desktop.widgets.common import HintLabel
from desktop.widgets.sampler_column import VIEW_BOTH, VIEW_X0, VIEW_XT


class RunControls(QWidget):
    """One row of controls above the sampler columns."""

    def __init__(self, parent=None):
        super().__init__(parent)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(QLabel("Seed"))
        self.seed_spin = QSpinBox()
        self.seed_spin.setRange(0, 2**31 - 1)
        self.seed_spin.setValue(settings.DEFAULT_SEED)
        self.seed_spin.setToolTip("Picks the starting noise. Every column starts from the same noise, so the "
                                  "differences you see come from the samplers alone.\nThe same seed gives the "
                                  "same pictures again.")
        self.new_seed = QPushButton("New seed")
        self.new_seed.setToolTip("Draw a different starting noise")
        self.new_seed.clicked.connect(lambda: self.seed_spin.setValue(random.randrange(2**31 - 1)))
        row.addWidget(self.seed_spin)
        row.addWidget(self.new_seed)
        row.addSpacing(12)
        row.addWidget(QLabel("Images per row"))
        self.per_row_spin = QSpinBox()
        self.per_row_spin.setRange(1, 16)
        self.per_row_spin.setValue(4)
        self.per_row_spin.setToolTip("How many images to draw for each context row of the context composer")
        row.addWidget(self.per_row_spin)
        self.rows_label = QLabel()
        row.addWidget(self.rows_label)
        row.addSpacing(12)
        row.addWidget(QLabel("Show"))
        self.view_box = QComboBox()
        self.view_box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.view_box.addItem("the model's guess x̂₀", VIEW_X0)
        self.view_box.addItem("the noisy image x_t", VIEW_XT)
        self.view_box.addItem("both", VIEW_BOTH)
        self.view_box.setToolTip("x_t is what the sampler holds at each step: noise turning into a picture.\n"
                                 "x̂₀ is the model's guess, at that step, of the finished picture.")
        row.addWidget(self.view_box)
        row.addStretch(1)
        self.run_hint = HintLabel("Press Run to draw with three samplers from the same noise.")
        row.addWidget(self.run_hint)
        # The sampler lab: one menu keeps the row short on small screens, each tool two clicks away.
        self.lab_button = QToolButton()
        self.lab_button.setText("Lab ▾")
        self.lab_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        # Fusion draws the menu arrow over the text's last letter on a button this short: the arrow is text.
        self.lab_button.setStyleSheet("QToolButton::menu-indicator { image: none; width: 0px; }")
        self.lab_button.setToolTip("More ways to sample: an X/Y grid of settings, sketch → emoji and inpainting, "
                                   "the history of every run (restore any of them), and settings read back from "
                                   "an exported PNG")
        self.lab_menu = QMenu(self.lab_button)
        self.grid_action = self.lab_menu.addAction("X/Y grid…")
        self.grid_action.setToolTip("Vary one setting along each axis (sampler × steps, guidance × label, ...) "
                                    "from the same noise")
        self.sketch_action = self.lab_menu.addAction("Sketch → emoji / inpaint…")
        self.sketch_action.setToolTip("Paint a rough picture and let the model finish it (SDEdit), or mark a part "
                                      "of an image to redraw (inpainting)")
        self.lab_menu.addSeparator()
        self.tune_action = self.lab_menu.addAction("Tune the steps…")
        self.tune_action.setToolTip("Search the timesteps that make few model calls draw best with the loaded model")
        self.shortcut_action = self.lab_menu.addAction("Teach a shortcut…")
        self.shortcut_action.setToolTip("Distil the loaded model into a student that draws in 1 to 4 model calls")
        self.lab_menu.addSeparator()
        self.history_action = self.lab_menu.addAction("History…")
        self.history_action.setToolTip("Every run you made, newest first: one click restores its settings here")
        self.png_action = self.lab_menu.addAction("Settings from a PNG…")
        self.png_action.setToolTip("Open an image this app exported and restore the settings that made it")
        self.lab_menu.setToolTipsVisible(True)
        self.lab_button.setMenu(self.lab_menu)
        row.addWidget(self.lab_button)
        self.add_button = QPushButton("+ Add sampler")
        self.add_button.setToolTip("Compare up to four samplers")
        self.run_button = QPushButton("Run")
        self.run_button.setDefault(True)
        self.run_button.setToolTip("Sample every column, one after another, from the same noise")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop after the current model call; finished columns are kept")
        self.cancel_button.setEnabled(False)
        row.addWidget(self.add_button)
        row.addWidget(self.run_button)
        row.addWidget(self.cancel_button)
