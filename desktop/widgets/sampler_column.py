"""One column of the Sample & compare panel: a sampler, its settings, its live grid and its timing."""
from __future__ import annotations


import numpy as np
from PySide6.QtCore import QEvent, QPoint, QSize, Qt, Signal, Slot
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFrame, QHBoxLayout, QLabel, QMenu,
                               QProgressBar, QPushButton, QSizePolicy, QSpinBox, QToolButton, QVBoxLayout,
                               QWidget)

from core.catalog import GUIDANCE_EVERYWHERE, SPACING_SUMMARY, SPACINGS, T_DEFAULT, SamplerChoice
from desktop.jobs.sampling import ColumnSpec
from desktop.widgets.common import HintLabel, ImageGridView, as_grid

MIN_COLUMNS, MAX_COLUMNS = 2, 4  # Sample & compare shows two to four sampler columns
COLUMN_COLORS = ("#1f77b4", "#e8710a", "#2ca02c", "#9467bd")  # column i keeps its colour in every chart

VIEW_X0, VIEW_XT, VIEW_BOTH = "x0", "xt", "both"

STEPS_TIP = ("Denoising steps = model calls per image (twice that when guidance is not 1).\n"
             "Fewer steps are faster; a good sampler needs fewer of them for the same quality.")
ETA_TIP = ("How much fresh noise DDIM adds at each step.\n0 = none: the same noise always gives the same image.\n"
           "1 = as much as DDPM.")
SPACING_TIP = ("Which noise levels the steps visit (the same choice for every sampler):\n" +
               "\n".join(f"{k}: {v}" for k, v in SPACING_SUMMARY.items()))
NAMED_SPACING_TIP = ("This model's own timesteps: tuned-N were searched for it (Tune the steps), distilled-N are\n"
                     "the steps a distilled student learnt (use DDIM and guidance 1 with it). Each holds its own\n"
                     "number of steps.")
GUIDANCE_TIP = ("Classifier-free guidance: how strongly the images follow their context.\n"
                "1 = the plain model; above 1 exaggerates the label (two model calls per step); "
                "0 ignores the context.\nUnticked, the column uses the context composer's value.")
INTERVAL_TIP = ("Guide only at these noise levels (t/T: 1 = pure noise, 0 = the finished image); outside them\n"
                "the step makes one plain model call. Guiding only the middle levels follows the label almost\n"
                "as well as guiding everywhere, with fewer model calls and images closer to real ones\n"
                "(Kynkäänniemi et al. 2024). 0 to 1 guides every step.")
RESCALE_TIP = ("Guidance rescale (0 to 1): pulls the guided image's contrast back towards the plain model's,\n"
               "against the washed-out or over-saturated look of strong guidance (Lin et al. 2024). 0 = off.")
INTERVAL_STEP = 0.05  # the interval's spin boxes move in steps of this, and keep at least this between them


def column_color(index: int) -> str:
    return COLUMN_COLORS[index % len(COLUMN_COLORS)]


def _choose(parent: QWidget, text: str, global_pos: QPoint) -> bool:
    """A one-item context menu; True when the item was chosen (modal: the tests replace this)."""
    menu = QMenu(parent)
    action = menu.addAction(text)
    chosen = menu.exec(global_pos) is action
    menu.deleteLater()
    return chosen


class SamplerColumn(QFrame):
    """Settings on top, the image grid(s) in the middle, progress and timing at the bottom."""

    settings_changed = Signal()
    remove_requested = Signal(object)  # this column
    save_requested = Signal(object)  # this column: save its final grid
    variations_requested = Signal(object, int)  # this column, an image's index in the batch: "Variations…"

    def __init__(self, catalog: list[SamplerChoice], parent=None):
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self._catalog = list(catalog)
        self._T = T_DEFAULT
        self._zero_terminal = False
        self._shared_guidance = 1.0
        self._per_row = 4
        self._row_names: list[str] = []
        self._view = VIEW_X0
        self._x: np.ndarray | None = None
        self._x0: np.ndarray | None = None
        self.index, self.color = 0, column_color(0)
        self._has_result = False
        self._build()
        self.set_index(0)
        self._on_sampler_changed()

    # --- construction ------------------------------------------------------------------------------
    def _build(self) -> None:
        lay = QVBoxLayout(self)
        lay.setContentsMargins(6, 4, 6, 6)
        lay.setSpacing(4)
        self._stripe = QFrame()
        self._stripe.setFixedHeight(5)
        lay.addWidget(self._stripe)
        lay.addLayout(self._build_head())
        lay.addLayout(self._build_settings())
        lay.addWidget(self._build_guidance_row())
        self._summary = HintLabel()
        self._summary.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        lay.addWidget(self._summary)
        lay.addWidget(self._build_grids(), 1)
        self._progress = QProgressBar()
        self._progress.setTextVisible(True)
        self._progress.setFormat("not run yet")
        self._progress.setValue(0)
        lay.addWidget(self._progress)
        foot = QHBoxLayout()
        self._result = QLabel("Not run yet")
        self._result.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self._save = QPushButton("Save PNG…")
        self._save.setToolTip("Save this column's final images as a PNG, with the sampler settings, seed and model "
                              "written inside the file")
        self._save.setEnabled(False)
        self._save.clicked.connect(lambda: self.save_requested.emit(self))
        foot.addWidget(self._result, 1)
        foot.addWidget(self._save)
        lay.addLayout(foot)
        self.sampler_box.currentIndexChanged.connect(self._on_sampler_changed)
        self.steps_spin.valueChanged.connect(self._on_setting_changed)
        self.eta_spin.valueChanged.connect(self._on_setting_changed)
        self.spacing_box.currentIndexChanged.connect(self._on_spacing_changed)
        self.own_guidance.toggled.connect(self._on_own_guidance)
        self.guidance_spin.valueChanged.connect(self._on_guidance_changed)
        self.interval_lo.valueChanged.connect(self._on_interval_changed)
        self.interval_hi.valueChanged.connect(self._on_interval_changed)
        self.rescale_spin.valueChanged.connect(self._on_setting_changed)

    def _build_head(self) -> QHBoxLayout:
        head = QHBoxLayout()
        self.sampler_box = QComboBox()
        for c in self._catalog:
            self.sampler_box.addItem(c.label, c.name)
        self._title = QLabel()
        self._title.setToolTip("Model calls per image: the cost of this sampler")
        self._remove = QToolButton()
        self._remove.setText("✕")
        self._remove.setAutoRaise(True)
        self._remove.setToolTip("Remove this sampler from the comparison")
        self._remove.clicked.connect(lambda: self.remove_requested.emit(self))
        head.addWidget(self.sampler_box, 1)
        head.addWidget(self._title)
        head.addWidget(self._remove)
        return head

    def _build_settings(self) -> QHBoxLayout:
        row = QHBoxLayout()
        row.setSpacing(4)
        self.steps_spin = QSpinBox()
        self.steps_spin.setRange(1, self._T)
        self.steps_spin.setToolTip(STEPS_TIP)
        self.eta_spin = QDoubleSpinBox()
        self.eta_spin.setRange(0.0, 1.0)
        self.eta_spin.setSingleStep(0.1)
        self.eta_spin.setDecimals(2)
        self.eta_spin.setToolTip(ETA_TIP)
        self.own_guidance = QCheckBox("own")
        self.own_guidance.setToolTip(GUIDANCE_TIP)
        self.guidance_spin = QDoubleSpinBox()
        self.guidance_spin.setRange(0.0, 20.0)
        self.guidance_spin.setSingleStep(0.5)
        self.guidance_spin.setDecimals(1)
        self.guidance_spin.setValue(1.0)
        self.guidance_spin.setEnabled(False)
        self.guidance_spin.setToolTip(GUIDANCE_TIP)
        self._eta_label = QLabel("eta")
        self._eta_label.setToolTip(ETA_TIP)
        self.spacing_box = QComboBox()
        for name in SPACINGS:
            self.spacing_box.addItem(name, name)
        self.spacing_box.setToolTip(SPACING_TIP)
        steps_label, g_label = QLabel("Steps"), QLabel("Guidance")
        steps_label.setToolTip(STEPS_TIP)
        g_label.setToolTip(GUIDANCE_TIP)
        for w in (steps_label, self.steps_spin, self.spacing_box, self._eta_label, self.eta_spin, g_label,
                  self.guidance_spin, self.own_guidance):
            row.addWidget(w)
        row.addStretch(1)
        return row

    def _build_guidance_row(self) -> QWidget:
        """Shown while the column is guided: where guidance acts (t/T interval) and its rescale."""
        self._guidance_row = QWidget()
        row = QHBoxLayout(self._guidance_row)
        row.setContentsMargins(0, 0, 0, 0)
        row.setSpacing(4)
        self.interval_lo, self.interval_hi = QDoubleSpinBox(), QDoubleSpinBox()
        for spin, value in ((self.interval_lo, GUIDANCE_EVERYWHERE[0]), (self.interval_hi, GUIDANCE_EVERYWHERE[1])):
            spin.setRange(0.0, 1.0)
            spin.setSingleStep(INTERVAL_STEP)
            spin.setDecimals(2)
            spin.setValue(value)
            spin.setToolTip(INTERVAL_TIP)
        self.interval_lo.setMaximum(GUIDANCE_EVERYWHERE[1] - INTERVAL_STEP)
        self.interval_hi.setMinimum(GUIDANCE_EVERYWHERE[0] + INTERVAL_STEP)
        self.rescale_spin = QDoubleSpinBox()
        self.rescale_spin.setRange(0.0, 1.0)
        self.rescale_spin.setSingleStep(0.1)
        self.rescale_spin.setDecimals(2)
        self.rescale_spin.setToolTip(RESCALE_TIP)
        where, dash, rescale = QLabel("Guide at t/T"), QLabel("–"), QLabel("rescale")
        where.setToolTip(INTERVAL_TIP)
        rescale.setToolTip(RESCALE_TIP)
        for w in (where, self.interval_lo, dash, self.interval_hi, rescale, self.rescale_spin):
            row.addWidget(w)
        row.addStretch(1)
        self._guidance_row.setVisible(False)
        return self._guidance_row

    def _build_grids(self) -> QWidget:
        box = QWidget()
        row = QHBoxLayout(box)
        row.setContentsMargins(0, 0, 0, 0)
        row.setSpacing(4)
        self._grid_x = ImageGridView(placeholder="The noisy image x_t appears here while sampling")
        self._grid_x0 = ImageGridView(placeholder="Press Run: the images form here from noise")
        for g in (self._grid_x, self._grid_x0):
            g.setMinimumSize(90, 90)
            # Claim little: the column's wrapped description makes its height follow its width, and a tall
            # claim would push the lower rows of images out of a small window instead of scaling them down.
            g.set_size_hint(QSize(200, 90))
            row.addWidget(g, 1)
        self._grid_x.setToolTip("x_t: the noisy image the sampler holds at this step")
        self._grid_x0.setToolTip("x̂₀: the model's guess of the finished image at this step.\nOnce the column is "
                                 "done, right-click or double-click an image for its variations")
        for g in (self._grid_x, self._grid_x0):
            g.installEventFilter(self)  # "Variations…": a right-click menu or a double-click (eventFilter)
        self._apply_view()
        return box

    def eventFilter(self, obj, event) -> bool:
        """Right-click ("Variations…" menu) or double-click on a result image: variations_requested."""
        kind = event.type()
        if obj in (self._grid_x, self._grid_x0) and kind in (QEvent.Type.ContextMenu, QEvent.Type.MouseButtonDblClick):
            pos = event.pos() if kind == QEvent.Type.ContextMenu else event.position().toPoint()
            index = obj.cell_at(pos) if self._has_result and self._x0 is not None else None
            if index is not None and index < len(self._x0):
                if kind == QEvent.Type.MouseButtonDblClick or _choose(self, f"Variations of image {index + 1}…",
                                                                      obj.mapToGlobal(pos)):
                    self.variations_requested.emit(self, index)
                return True
        return super().eventFilter(obj, event)

    # --- settings ----------------------------------------------------------------------------------
    def set_index(self, index: int) -> None:
        self.index = index
        self.color = column_color(index)
        self._stripe.setStyleSheet(f"background: {self.color}; border-radius: 2px;")
        self._update_title()

    def _choice(self) -> SamplerChoice:
        name = self.sampler_box.currentData()
        return next((c for c in self._catalog if c.name == name), self._catalog[0])

    def _default_steps(self, choice: SamplerChoice) -> int:
        return self._T if choice.default_steps == 0 else min(choice.default_steps, self._T)

    @Slot()
    def _on_sampler_changed(self) -> None:
        choice = self._choice()
        self.steps_spin.blockSignals(True)
        self.steps_spin.setValue(self._default_steps(choice))
        self.steps_spin.blockSignals(False)
        self._eta_label.setVisible(choice.has_eta)
        self.eta_spin.setVisible(choice.has_eta)
        self.sampler_box.setToolTip(choice.summary)
        self._on_setting_changed()

    @Slot()
    def _on_own_guidance(self, on: bool) -> None:
        self.guidance_spin.setEnabled(on)
        if not on:
            self.guidance_spin.setValue(self._shared_guidance)
        self._on_setting_changed()

    @Slot()
    def _on_guidance_changed(self) -> None:
        # isHidden, not isVisible: a column not yet shown (or on a hidden tab) still knows what it will show
        self._guidance_row.setHidden(self.guidance_spin.value() == 1.0)
        self._on_setting_changed()

    @Slot()
    def _on_interval_changed(self) -> None:
        """Keep lo < hi: each box's range ends one step short of the other's value."""
        for spin, bound in ((self.interval_lo, self.interval_hi.value() - INTERVAL_STEP),
                            (self.interval_hi, self.interval_lo.value() + INTERVAL_STEP)):
            spin.blockSignals(True)
            (spin.setMaximum if spin is self.interval_lo else spin.setMinimum)(round(bound, 2))
            spin.blockSignals(False)
        self._on_setting_changed()

    @Slot()
    def _on_setting_changed(self) -> None:
        self._update_title()
        self._mark_stale()
        self.settings_changed.emit()

    def _mark_stale(self) -> None:
        """Settings (or the model) no longer those of the shown result: say so and grey its numbers (kept)."""
        spec = getattr(self, "_result_spec", None)
        model_stale = spec is not None and getattr(self, "_model_stale", False)
        stale = spec is not None and (model_stale or spec != self.spec())
        if stale == getattr(self, "stale", False) and not model_stale:
            return
        self.stale = stale
        self._result.setStyleSheet("color: gray;" if stale else "")
        why = "model changed" if model_stale else "settings changed"
        self._progress.setFormat(f"{why} — Run to update" if stale else "done")

    def mark_model_changed(self) -> None:
        """Another model is loaded: the shown result is from the previous one."""
        self._model_stale = True
        self._mark_stale()

    def _update_summary(self) -> None:
        """The sampler's one-line summary; on a distilled student's model, off its own steps, a warning instead:
        its weights learnt only its own jumps, so any other sampler or spacing draws broken images."""
        own = [name for name in getattr(self, "_named", {}) if name.startswith("distilled-")]
        if own and self.spec().spacing not in own:
            self._summary.setText(f"This model is a distilled student: other samplers draw poorly with it. "
                                  f"Use its own steps: DDIM on the spacing {own[0]}.")
            self._summary.setStyleSheet("color: #b35900;")
        else:
            self._summary.setText(self._choice().summary)
            self._summary.setStyleSheet("")

    def _update_title(self) -> None:
        self._update_summary()
        spec = self.spec()
        if spec.spacing.startswith("distilled-"):
            self._title.setText(f"distilled, {spec.calls} calls")
        else:  # guided only inside an interval: the steps outside it make one call, not two
            self._title.setText(f"≤ {spec.calls} calls" if spec.partly_guided else f"{spec.calls} calls")

    def set_T(self, T: int, zero_terminal: bool = False) -> None:
        """The model's number of training steps: the most steps any sampler can take (DDPM's default); and
        whether its schedule ends in pure noise (which changes Heun's model calls)."""
        was_full = self.steps_spin.value() == self._T
        self._T, self._zero_terminal = T, zero_terminal
        self.steps_spin.setMaximum(T)
        if was_full and self._choice().default_steps == 0:
            self.steps_spin.setValue(T)

    def set_model_spacings(self, named: dict[str, int]) -> None:
        """The loaded model's own spacings (name -> steps) join the built-in ones; a column on a spacing the new
        model lacks goes back to trailing."""
        current = self.spacing_box.currentData()
        self._named = dict(named)
        self.spacing_box.blockSignals(True)
        self.spacing_box.clear()
        for name in SPACINGS:
            self.spacing_box.addItem(name, name)
        for name, steps in self._named.items():
            self.spacing_box.addItem(f"{name} ({steps} steps)", name)
            self.spacing_box.setItemData(self.spacing_box.count() - 1, NAMED_SPACING_TIP, Qt.ItemDataRole.ToolTipRole)
        self.spacing_box.setCurrentIndex(max(0, self.spacing_box.findData(current)))
        self.spacing_box.blockSignals(False)
        self._on_spacing_changed()

    @Slot()
    def _on_spacing_changed(self) -> None:
        """A named spacing has its own number of steps: set them and hold them while it is chosen."""
        steps = getattr(self, "_named", {}).get(self.spacing_box.currentData())
        self.steps_spin.blockSignals(True)
        if steps is not None:
            self.steps_spin.setValue(steps)
        self.steps_spin.setEnabled(steps is None and not getattr(self, "_running", False))
        self.steps_spin.blockSignals(False)
        self._on_setting_changed()

    def set_shared_guidance(self, g: float) -> None:
        self._shared_guidance = float(g)
        if not self.own_guidance.isChecked():
            self.guidance_spin.setValue(self._shared_guidance)

    def set_spec(self, sampler: str, steps: int | None = None, eta: float = 0.0, guidance: float | None = None,
                 spacing: str = "trailing", interval: tuple[float, float] = GUIDANCE_EVERYWHERE,
                 rescale: float = 0.0) -> None:
        """Set the column's settings; guidance None follows the context composer. interval (t/T) and rescale
        shape the guidance (see ColumnSpec)."""
        i = self.sampler_box.findData(sampler)
        if i < 0:
            raise ValueError(f"unknown sampler {sampler!r}")
        self.sampler_box.setCurrentIndex(i)
        self._on_sampler_changed()
        if steps is not None:
            self.steps_spin.setValue(steps)
        self.eta_spin.setValue(eta)
        self.spacing_box.setCurrentIndex(max(0, self.spacing_box.findData(spacing)))
        self._on_spacing_changed()
        self.own_guidance.setChecked(guidance is not None)
        if guidance is not None:
            self.guidance_spin.setValue(guidance)
        self.set_guidance_shape(interval, rescale)

    def set_guidance_shape(self, interval: tuple[float, float], rescale: float = 0.0) -> None:
        """Where guidance acts (t/T, lo < hi) and its rescale."""
        lo, hi = float(interval[0]), float(interval[1])
        for spin in (self.interval_lo, self.interval_hi):
            spin.blockSignals(True)
            spin.setRange(0.0, 1.0)
        self.interval_lo.setValue(lo)
        self.interval_hi.setValue(hi)
        for spin in (self.interval_lo, self.interval_hi):
            spin.blockSignals(False)
        self.rescale_spin.blockSignals(True)
        self.rescale_spin.setValue(rescale)
        self.rescale_spin.blockSignals(False)
        self._on_interval_changed()

    def spec(self) -> ColumnSpec:
        choice = self._choice()
        eta = self.eta_spin.value() if choice.has_eta else 0.0
        g = self.guidance_spin.value() if self.own_guidance.isChecked() else self._shared_guidance
        return ColumnSpec(choice.name, self.steps_spin.value(), eta, g, choice.label, self.spacing_box.currentData(),
                          self._zero_terminal, (self.interval_lo.value(), self.interval_hi.value()),
                          self.rescale_spin.value())

    # --- running state and pictures -----------------------------------------------------------------
    def set_removable(self, removable: bool) -> None:
        self._remove.setEnabled(removable)

    def set_running(self, running: bool) -> None:
        """Lock the settings while a run uses them."""
        self._running = running
        for w in (self.sampler_box, self.steps_spin, self.spacing_box, self.eta_spin, self.own_guidance, self._remove,
                  self.interval_lo, self.interval_hi, self.rescale_spin):
            w.setEnabled(not running)
        if not running and getattr(self, "_named", {}).get(self.spacing_box.currentData()) is not None:
            self.steps_spin.setEnabled(False)  # a named spacing holds its steps
        self.guidance_spin.setEnabled(not running and self.own_guidance.isChecked())
        self._save.setEnabled(not running and self._has_result)

    def set_layout_info(self, per_row: int, row_names: list[str]) -> None:
        """Images per row of the grid, and the row names (only the first column draws them)."""
        self._per_row, self._row_names = max(1, per_row), list(row_names)
        self._redraw()

    def set_view(self, view: str) -> None:
        self._view = view
        self._apply_view()

    def _apply_view(self) -> None:
        self._grid_x.setVisible(self._view in (VIEW_XT, VIEW_BOTH))
        self._grid_x0.setVisible(self._view in (VIEW_X0, VIEW_BOTH))
        self._redraw()

    def show_frame(self, x: np.ndarray | None, x0: np.ndarray | None) -> None:
        """(n, H, W, 3) uint8 of x_t and the predicted x0 (either may be None)."""
        self._x, self._x0 = x, x0
        self._redraw()

    def _redraw(self) -> None:
        # Row names go on the left-most column only, and not in the two-grid view (too narrow there).
        names = self._row_names if self.index == 0 and self._view != VIEW_BOTH else None
        names_x = names if self._view == VIEW_XT else None
        names_x0 = names if self._view == VIEW_X0 else None
        self._grid_x.set_grid(None if self._x is None else as_grid(self._x, self._per_row), names_x)
        self._grid_x0.set_grid(None if self._x0 is None else as_grid(self._x0, self._per_row), names_x0)

    def set_waiting(self, text: str = "waiting for its turn") -> None:
        self._progress.setRange(0, 1)
        self._progress.setValue(0)
        self._progress.setFormat(text)

    def set_progress(self, step: int, steps: int, t: int) -> None:
        self._progress.setRange(0, steps)
        self._progress.setValue(step)
        self._progress.setFormat(f"step {step} of {steps}  (noise level t = {t})")

    def set_result(self, result) -> None:
        """A finished ColumnResult (or None to clear)."""
        self._has_result = result is not None
        self._result_spec = result.spec if result is not None else None
        self.stale = False
        self._model_stale = False
        self._result.setStyleSheet("")
        if result is None:
            self._result.setText("Not run yet")
            self._save.setEnabled(False)
            return
        self._progress.setRange(0, 1)
        self._progress.setValue(1)
        self._progress.setFormat("done")
        self._result.setText(f"<b>{result.seconds:.2f} s</b> · {result.nfe} model calls · "
                             f"{result.ms_per_call:.1f} ms per call")

    def set_stopped(self, text: str) -> None:
        self._progress.setFormat(text)
