"""The Data & labels tab's image browser: a list model whose pixmaps are made on demand and cached,
the icon view it feeds, and the label filter."""
from __future__ import annotations

from collections import OrderedDict

import numpy as np
from PySide6.QtCore import QAbstractListModel, QModelIndex, QSize, Qt
from PySide6.QtWidgets import QAbstractItemView, QListView

from desktop.widgets.common import pixmap_from_rgb

FILTER_ALL, FILTER_UNLABELLED = -1, -2
ROLE_INDEX = Qt.ItemDataRole.UserRole + 1  # the image's row in the data set


class ImageListModel(QAbstractListModel):
    """The (filtered) images of a data set for a QListView in IconMode; 90,000 rows are fine."""

    CACHE_SIZE = 6000

    def __init__(self, parent=None):
        super().__init__(parent)
        self.ds = None
        self.rows = np.zeros(0, np.int64)  # data-set indices shown, in order
        self.scale = 3
        self._cache: OrderedDict[int, object] = OrderedDict()
        self.pixmaps_made = 0

    def set_dataset(self, ds, rows: np.ndarray) -> None:
        self.beginResetModel()
        if ds is None or self.ds is None or ds.images is not self.ds.images:
            self._cache.clear()
        self.ds, self.rows = ds, np.asarray(rows, np.int64)
        self.scale = max(1, 48 // ds.size) if ds is not None else 3
        self.endResetModel()

    def set_rows(self, rows: np.ndarray) -> None:
        rows = np.asarray(rows, np.int64)
        if np.array_equal(rows, self.rows):
            if len(rows):  # same images, new labels: refresh the tooltips only
                self.dataChanged.emit(self.index(0), self.index(len(rows) - 1), [Qt.ItemDataRole.ToolTipRole])
            return
        self.beginResetModel()
        self.rows = rows
        self.endResetModel()

    def replace_dataset_labels(self, ds) -> None:
        """Same images, edited labels: keep the pixmap cache."""
        self.ds = ds

    def rowCount(self, parent=QModelIndex()) -> int:  # noqa: B008 - Qt's own signature; an invalid index is immutable
        return 0 if parent.isValid() else len(self.rows)

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid() or self.ds is None:
            return None
        i = int(self.rows[index.row()])
        if role == Qt.ItemDataRole.DecorationRole:
            return self._pixmap(i)
        if role == Qt.ItemDataRole.ToolTipRole:
            names = [n for n, v in zip(self.ds.label_names, self.ds.labels[i]) if v > 0]
            return f"Image {i + 1:,}\nLabels: {', '.join(names) if names else 'none'}"
        if role == ROLE_INDEX:
            return i
        return None

    def _pixmap(self, i: int):
        pm = self._cache.get(i)
        if pm is None:
            pm = pixmap_from_rgb(self.ds.images[i], self.scale)
            self.pixmaps_made += 1
            self._cache[i] = pm
            if len(self._cache) > self.CACHE_SIZE:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(i)
        return pm


def make_image_view(model: ImageListModel) -> QListView:
    view = QListView()
    view.setViewMode(QListView.ViewMode.IconMode)
    view.setUniformItemSizes(True)
    view.setMovement(QListView.Movement.Static)
    view.setResizeMode(QListView.ResizeMode.Adjust)
    view.setLayoutMode(QListView.LayoutMode.Batched)
    view.setBatchSize(4000)
    view.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
    view.setIconSize(QSize(48, 48))
    view.setGridSize(QSize(54, 54))
    view.setSpacing(0)
    # Always there: a scroll bar that appears later (the batched layout shows it only after the first click)
    # narrows the viewport and reflows the grid under the pointer, so a planned Shift-click hits another image.
    view.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOn)
    view.setWordWrap(False)
    view.setModel(model)
    view.setToolTip("")
    return view


def filtered_rows(ds, key) -> np.ndarray:
    """Data-set indices of the images a filter shows: FILTER_ALL, FILTER_UNLABELLED or a label index."""
    if ds is None:
        return np.zeros(0, np.int64)
    if key == FILTER_UNLABELLED:
        return np.flatnonzero((ds.labels <= 0).all(axis=1))
    if isinstance(key, int) and 0 <= key < ds.n_labels:
        return np.flatnonzero(ds.labels[:, key] > 0)
    return np.arange(ds.n)
