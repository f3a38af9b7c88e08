"""The Data & labels tab's layout: the labels box, the image browser with its filter, assign and import rows,
and the composer (DataLayout, a mixin of desktop.panels.data_panel.DataPanel)."""
from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (QComboBox, QGroupBox, QHBoxLayout, QLabel, QPushButton, QSizePolicy, QSplitter,
                               QVBoxLayout, QWidget)

from desktop.panels.image_browser import ImageListModel, make_image_view
from desktop.panels.label_box import LabelsBox


class DataLayout:
    """Mixed into the panel: builds its widgets (the panel keeps the behaviour)."""

    # --- layout ---------------------------------------------------------------------------------------
    def _build(self) -> None:
        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        lb = self.labels_box = LabelsBox()
        # its widgets, under the names the panel has always had
        self.table, self.chart, self.bars, self.save_info = lb.table, lb.chart, lb.bars, lb.save_info
        self.add_btn, self.rename_btn, self.delete_btn = lb.add_btn, lb.rename_btn, lb.delete_btn
        self.up_btn, self.down_btn, self.teach_btn = lb.up_btn, lb.down_btn, lb.teach_btn
        self.table.itemChanged.connect(self._on_item_changed)
        self.table.currentCellChanged.connect(lambda *_: self._update_buttons())
        self.add_btn.clicked.connect(self.add_label)
        self.rename_btn.clicked.connect(self._on_rename)
        self.delete_btn.clicked.connect(self._on_delete)
        self.up_btn.clicked.connect(lambda: self._on_move(-1))
        self.down_btn.clicked.connect(lambda: self._on_move(1))
        self.teach_btn.clicked.connect(lambda: self.teach_requested.emit())
        self.splitter.addWidget(lb)
        self.splitter.addWidget(self._build_browser())
        self.splitter.addWidget(self.composer)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setSizes([300, 620, 360])
        lay = QVBoxLayout(self)
        lay.addWidget(self.splitter)

    def _build_browser(self) -> QWidget:
        box = QGroupBox("Images")
        lay = QVBoxLayout(box)
        top = QHBoxLayout()
        self.filter_combo = QComboBox()
        self.filter_combo.setToolTip("Show only the images with this label (or those with none).")
        self.filter_combo.currentIndexChanged.connect(self._apply_filter)
        self.shown_label = QLabel("")
        top.addWidget(QLabel("Show"))
        top.addWidget(self.filter_combo, 1)
        top.addWidget(self.shown_label)
        lay.addLayout(top)
        self.model = ImageListModel(self)
        self.view = make_image_view(self.model)
        self.view.selectionModel().selectionChanged.connect(self._on_selection_changed)
        lay.addWidget(self.view, 1)
        lay.addLayout(self._build_assign_row())
        lay.addLayout(self._build_import_row())
        return box

    def _build_assign_row(self) -> QHBoxLayout:
        row = QHBoxLayout()
        self.selection_label = QLabel("None selected")
        self.selection_label.setToolTip("Select images with click, Shift-click (a range) and Ctrl-click (one more); "
                                        "Ctrl+A selects all shown.")
        # Its text changes with every click; were its width to follow, the image grid beside it would reflow
        # under the pointer (a Shift-click then selects another range).
        self.selection_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.selection_label.setMinimumWidth(self.selection_label.fontMetrics().horizontalAdvance("9,999 selected"))
        self.assign_combo = QComboBox()
        self.assign_combo.setToolTip("The label to add to or remove from the selected images.")
        self.assign_btn = QPushButton("Assign")
        self.assign_btn.setToolTip("Give the selected images this label (they keep their other labels). "
                                   "Select with click, Shift-click and Ctrl-click, or Ctrl+A for all shown.")
        self.unassign_btn = QPushButton("Unassign")
        self.unassign_btn.setToolTip("Take this label away from the selected images.")
        self.assign_btn.clicked.connect(lambda: self.assign_selected(self.assign_combo.currentIndex(), True))
        self.unassign_btn.clicked.connect(lambda: self.assign_selected(self.assign_combo.currentIndex(), False))
        row.addWidget(self.selection_label, 1)
        row.addWidget(self.assign_combo)
        row.addWidget(self.assign_btn)
        row.addWidget(self.unassign_btn)
        return row

    def _build_import_row(self) -> QHBoxLayout:
        row = QHBoxLayout()
        row.addWidget(QLabel("Import:"))
        for text, tip, slot in [
            ("Image folder…", "A folder of PNG/JPEG/GIF/BMP/WebP images; each sub-folder becomes a label.",
             self.import_folder),
            ("Course files…", "The course's sprites_*.npy file (its labels file is found beside it).",
             self.import_course),
            ("Sprite sheet…", "One image holding many sprites on a grid.", self.import_sprite_sheet)]:
            b = QPushButton(text)
            b.setToolTip(tip)
            b.clicked.connect(lambda _=False, s=slot: s())
            row.addWidget(b)
        row.addStretch(1)
        return row
