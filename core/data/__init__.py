"""Image data sets for training: built-in emoji, the course .npy pair, image folders, sprite sheets.

A data set is images (N, H, W, 3) uint8 plus a label matrix (N, L) float32 and L label names.
Rows of the label matrix may be one-hot, multi-hot or all zero (unlabelled); L may be 0.

    dataset.py  ImageDataset, resizing, mirror_safe
    files.py    our .npz, the built-in sets, the course's .npy pair
    images.py   image folders, sprite sheets, load_dataset (the one entry point)
Label edits live in core.labels and the sampling-context parser in core.context (both torch-free).
Every loader turns bad input into a `DataError` whose message is one line naming the file and the
problem. Nothing here imports Qt.
"""
from ..errors import DataError
from .dataset import ImageDataset, course_label_names, mirror_safe, resize_images
from .files import find_labels_beside, load_builtin, load_course_npy, load_npz, save_npz
from .images import IMAGE_FORMATS, IMAGE_SUFFIXES, load_dataset, load_image, load_image_folder, load_sprite_sheet

__all__ = ["DataError", "IMAGE_FORMATS", "IMAGE_SUFFIXES", "ImageDataset", "course_label_names", "find_labels_beside",
           "load_builtin", "load_course_npy", "load_dataset", "load_image", "load_image_folder", "load_npz", "load_sprite_sheet",
           "mirror_safe", "resize_images", "save_npz"]
