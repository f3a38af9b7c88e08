"""Tests for core.data: built-in sets, file formats, folders, sprite sheets, context specs."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
from PIL import Image

from core.paths import resource_path

from core.catalog import BUILTIN_DATASETS
from core.context import context_from_spec
from core.data import (
    DataError, ImageDataset, course_label_names,
    load_builtin, load_course_npy, load_dataset, load_image_folder, load_npz,
    load_sprite_sheet, resize_images, save_npz,
)

EMOJI_LABELS = ["face", "person", "animal & nature", "food", "object", "symbol & flag"]


def tiny_dataset(n: int = 6, size: int = 4, n_labels: int = 3, seed: int = 0) -> ImageDataset:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    labels = np.eye(n_labels, dtype=np.float32)[np.arange(n) % n_labels]
    return ImageDataset(images, labels, [f"c{i}" for i in range(n_labels)], "tiny")


def course_pair(folder, n=10, *, images=None, labels=None, stem="1788_16x16"):
    """Write a course-style sprites_*.npy / sprite_labels_nc_*.npy pair; return their paths."""
    rng = np.random.default_rng(1)
    if images is None:
        images = rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)
    if labels is None:
        labels = np.eye(5)[rng.integers(0, 5, n)]  # float64 one-hot, as the course ships it
    images_path = folder / f"sprites_{stem}.npy"
    labels_path = folder / f"sprite_labels_nc_{stem}.npy"
    np.save(images_path, images, allow_pickle=True)
    np.save(labels_path, labels, allow_pickle=True)
    return images_path, labels_path


def save_png(path, array):
    """Save an (H, W, 3) RGB or (H, W, 4) RGBA array as PNG, creating folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.asarray(array, dtype=np.uint8)
    Image.fromarray(array).convert("RGBA" if array.shape[-1] == 4 else "RGB").save(path)


# ---------------------------------------------------------------------------------------------
# Built-in sets
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,size", [("emoji16", 16), ("emoji32", 32)])
def test_builtin_loads_with_expected_shapes_and_labels(name, size):
    ds = load_builtin(name)
    assert ds.images.shape == (3812, size, size, 3) and ds.images.dtype == np.uint8
    assert ds.labels.shape == (3812, 6) and ds.labels.dtype == np.float32
    assert ds.label_names == EMOJI_LABELS
    assert (ds.labels.sum(axis=1) == 1).all()  # one-hot: every emoji has exactly one label
    assert ds.label_counts().tolist() == [338, 772, 318, 262, 1134, 988]
    assert ds.source == f"builtin:{name}" and ds.name == name
    # White background: the corners of most emoji are pure white.
    assert (ds.images[:, 0, 0] == 255).all(axis=1).mean() > 0.5


def test_builtin_files_hold_only_plain_arrays():
    for file in BUILTIN_DATASETS.values():
        with np.load(resource_path(file), allow_pickle=False) as z:
            assert set(z.files) == {"images", "labels", "label_names", "style", "names"}
            assert z["style"].tolist().count(0) == z["style"].tolist().count(1) == 1906
            assert z["names"].dtype.kind == "U" and z["names"][0] == "grinning"


def test_load_dataset_dispatches_builtin_names():
    assert load_dataset("emoji16").size == 16
    assert load_dataset("builtin:EMOJI32").size == 32
    with pytest.raises(DataError, match="no such built-in"):
        load_builtin("emoji64")


# ---------------------------------------------------------------------------------------------
# The data set object
# ---------------------------------------------------------------------------------------------

def test_validation_names_the_problem():
    ds = tiny_dataset()
    with pytest.raises(DataError, match=r"expected images of shape \(N, H, W, 3\) uint8, "
                                        r"got \(6, 4, 4\) float64"):
        ImageDataset(np.zeros((6, 4, 4)), ds.labels, ds.label_names, "x")
    with pytest.raises(DataError, match="6 images but 5 label rows"):
        ImageDataset(ds.images, ds.labels[:5], ds.label_names, "x")
    with pytest.raises(DataError, match="3 label columns but 2 label names"):
        ImageDataset(ds.images, ds.labels, ["a", "b"], "x")
    with pytest.raises(DataError, match="unique"):
        ImageDataset(ds.images, ds.labels, ["a", "b", "A"], "x")


def test_fingerprint_stable_and_sensitive():
    a, b = tiny_dataset(), tiny_dataset()
    assert a.fingerprint() == b.fingerprint() and len(a.fingerprint()) == 16
    assert load_builtin("emoji16").fingerprint() == "4790ba26fcae6722"  # pins the shipped file
    changed_pixel = a.images.copy()
    changed_pixel[0, 0, 0, 0] ^= 1
    changed_label = a.labels.copy()
    changed_label[0] = [0, 0.5, 0]
    variants = [
        ImageDataset(changed_pixel, a.labels, a.label_names, "tiny"),
        a.with_labels(changed_label, a.label_names),
        a.with_labels(a.labels, ["c0", "c1", "renamed"]),
        a.subset([1, 0, 2, 3, 4, 5]),
    ]
    assert len({a.fingerprint(), *(v.fingerprint() for v in variants)}) == 5


def test_to_tensor_range_and_layout():
    ds = tiny_dataset()
    ds.images[0] = 0
    ds.images[1] = 255
    x = ds.to_tensor()
    assert x.shape == (6, 3, 4, 4) and str(x.dtype) == "torch.float32"
    assert x.min().item() == -1.0 and x.max().item() == 1.0
    assert x[2, 1, 3, 0].item() == pytest.approx(ds.images[2, 3, 0, 1] / 127.5 - 1)


def test_subset_with_labels_counts_and_resize():
    ds = tiny_dataset(n=6, size=4)
    assert ds.label_counts().tolist() == [2, 2, 2]
    sub = ds.subset(ds.labels[:, 0] > 0)
    assert sub.n == 2 and np.array_equal(sub.images, ds.images[[0, 3]])
    relabelled = ds.with_labels(np.ones((6, 1), np.float32), ["all"])
    assert relabelled.label_names == ["all"] and relabelled.label_counts().tolist() == [6]
    assert ds.with_labels([], []).n_labels == 0
    big = ds.resized(8)
    assert big.size == 8 and np.array_equal(big.images[:, ::2, ::2], ds.images)  # NEAREST x2
    assert np.array_equal(big.resized(4).images, ds.images)  # whole-factor down undoes it


def test_resize_center_crops_and_box_filters():
    wide = np.zeros((1, 4, 8, 3), np.uint8)
    wide[:, :, 2:6] = 200  # the centre square
    assert (resize_images(wide, 4) == 200).all()
    ramp = np.tile(np.arange(6, dtype=np.uint8)[None, :, None] * 40, (6, 1, 3))[None]
    down = resize_images(ramp, 4)  # 6 -> 4 is not a whole factor: area averaging
    assert down.shape == (1, 4, 4, 3) and 0 < down[0, 0, 0, 0] < 40


# ---------------------------------------------------------------------------------------------
# Our .npz format
# ---------------------------------------------------------------------------------------------

def test_npz_round_trip(tmp_path):
    ds = tiny_dataset()
    path = save_npz(ds, tmp_path / "sets" / "mine.npz")
    back = load_npz(path)
    assert np.array_equal(back.images, ds.images) and np.array_equal(back.labels, ds.labels)
    assert back.label_names == ds.label_names and back.name == "tiny"
    assert back.fingerprint() == ds.fingerprint()
    assert [p.name for p in path.parent.iterdir()] == ["mine.npz"]  # no temp files left
    assert load_dataset(str(path)).fingerprint() == ds.fingerprint()


def test_npz_save_failure_keeps_previous_file(tmp_path, monkeypatch):
    path = save_npz(tiny_dataset(seed=0), tmp_path / "mine.npz")
    before = path.read_bytes()

    def disk_full(*args, **kwargs):
        raise OSError("No space left on device")
    monkeypatch.setattr(np, "savez_compressed", disk_full)
    with pytest.raises(OSError):
        save_npz(tiny_dataset(seed=1), path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["mine.npz"]


def test_npz_bad_inputs(tmp_path):
    missing = tmp_path / "missing.npz"
    np.savez(missing, images=np.zeros((1, 4, 4, 3), np.uint8))
    with pytest.raises(DataError, match=r"missing\.npz: .*missing array\(s\) labels, label_names"):
        load_npz(missing)
    objects = tmp_path / "objects.npz"
    np.savez(objects, images=np.zeros((1, 4, 4, 3), np.uint8), labels=np.zeros((1, 0), np.float32),
             label_names=np.array([{"evil": 1}], dtype=object))
    with pytest.raises(DataError, match=r"objects\.npz: contains Python objects"):
        load_npz(objects)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip at all")
    with pytest.raises(DataError, match=r"garbage\.npz: not a readable \.npz file"):
        load_npz(garbage)


# ---------------------------------------------------------------------------------------------
# The course .npy pair
# ---------------------------------------------------------------------------------------------

def test_course_pair_round_trip(tmp_path):
    images_path, labels_path = course_pair(tmp_path)
    ds = load_course_npy(images_path)  # labels found beside the images
    assert np.array_equal(ds.images, np.load(images_path))
    assert np.array_equal(ds.labels, np.load(labels_path).astype(np.float32))
    assert ds.labels.dtype == np.float32 and ds.label_names == course_label_names()
    assert ds.label_names == ["hero", "non-hero", "food", "spell", "side-facing"]
    explicit = load_dataset(str(images_path), labels=str(labels_path))
    assert explicit.fingerprint() == ds.fingerprint()


def test_course_labels_found_by_pattern_or_absent(tmp_path):
    images = np.zeros((3, 8, 8, 3), np.uint8)
    np.save(tmp_path / "my_images.npy", images)
    assert load_course_npy(tmp_path / "my_images.npy").n_labels == 0  # nothing beside: unlabelled
    np.save(tmp_path / "my_labels.npy", np.array([0, 2, 1]))  # class ids become one-hot
    ds = load_course_npy(tmp_path / "my_images.npy")
    assert ds.labels.tolist() == [[1, 0, 0], [0, 0, 1], [0, 1, 0]]
    assert ds.label_names == ["label 1", "label 2", "label 3"]


@pytest.mark.parametrize("case,message", [
    ("count", r"sprite_labels_nc_1788_16x16\.npy: 9 label rows but 10 images"),
    ("shape", r"sprites_1788_16x16\.npy: expected images of shape \(N, H, W, 3\) uint8, "
              r"got \(10, 16, 16\) float64"),
    ("float", r"sprites_1788_16x16\.npy: expected images .* got \(10, 16, 16, 3\) float32"),
    ("object", r"sprite_labels_nc_1788_16x16\.npy: contains Python objects"),
    ("pickle", r"sprites_1788_16x16\.npy: contains Python objects"),
    ("garbage", r"sprites_1788_16x16\.npy: not a readable \.npy file"),
])
def test_course_bad_inputs_name_the_file(tmp_path, case, message):
    good_images = np.zeros((10, 16, 16, 3), np.uint8)
    kwargs = {
        "count": dict(labels=np.eye(5)[np.zeros(9, int)]),
        "shape": dict(images=np.zeros((10, 16, 16))),
        "float": dict(images=np.zeros((10, 16, 16, 3), np.float32)),
        "object": dict(labels=np.array([None] * 10, dtype=object)),
    }.get(case, {})
    images_path, _ = course_pair(tmp_path, **kwargs)
    if case == "pickle":
        images_path.write_bytes(pickle.dumps(good_images))  # a pickle disguised as .npy
    if case == "garbage":
        images_path.write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(DataError, match=message):
        load_course_npy(images_path)


# ---------------------------------------------------------------------------------------------
# Image folders
# ---------------------------------------------------------------------------------------------

def test_image_folder_labels_transparency_and_skips(tmp_path):
    root = tmp_path / "pets"
    save_png(root / "cat" / "a.png", np.full((16, 16, 3), (200, 10, 10)))
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[..., :3] = (0, 0, 200)
    rgba[:16, :, 3] = 255   # top half opaque blue
    rgba[16:, :, 3] = 0     # bottom half transparent -> white
    rgba[16:, :16, 3] = 128  # bottom-left half transparent blue over white
    save_png(root / "dog" / "b.png", rgba)
    save_png(root / "dog" / "deeper" / "c.png", np.zeros((8, 8, 3)))
    save_png(root / "loose.png", np.full((16, 16, 3), 50))
    (root / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (root / "notes.txt").write_text("not an image")
    (root / ".DS_Store").write_bytes(b"\0\0")
    (root / "empty").mkdir()

    ds = load_image_folder(root, size=16)
    assert ds.label_names == ["cat", "dog"] and ds.name == "pets"
    assert ds.images.shape == (4, 16, 16, 3)
    assert ds.labels.tolist() == [[0, 0], [1, 0], [0, 1], [0, 1]]  # loose.png is unlabelled
    dog = ds.images[2]
    assert dog[0, 0].tolist() == [0, 0, 200]            # opaque stays blue
    assert dog[15, 15].tolist() == [255, 255, 255]      # transparent -> white
    assert dog[15, 0].tolist() == [127, 127, 227]       # 50% blue over white
    skipped = dict(ds.skipped)
    assert set(skipped) == {"cat/broken.png", "notes.txt", "empty/"}
    assert "cannot read image" in skipped["cat/broken.png"]
    assert skipped["notes.txt"] == "not an image file"


def test_image_folder_palette_transparency_and_resize_filters(tmp_path):
    pal = Image.new("P", (4, 4), 0)
    pal.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    pal.putpixel((0, 0), 1)
    pal.save(tmp_path / "pal.gif", transparency=0)  # colour 0 (red) is transparent
    art = np.kron(np.arange(16, dtype=np.uint8).reshape(4, 4), np.ones((4, 4), np.uint8)) * 16
    save_png(tmp_path / "art.png", np.repeat(art[..., None], 3, axis=2))  # 4x4 art shown at 16 px
    ds = load_image_folder(tmp_path, size=4)
    art_img, pal_img = ds.images
    assert art_img[..., 0].tolist() == (np.arange(16).reshape(4, 4) * 16).tolist()  # exact
    assert pal_img[0, 0].tolist() == [0, 255, 0] and pal_img[3, 3].tolist() == [255, 255, 255]


def test_image_folder_errors(tmp_path):
    with pytest.raises(DataError, match="no usable images"):
        load_image_folder(tmp_path)
    (tmp_path / "readme.txt").write_text("hello")
    with pytest.raises(DataError, match=r"no usable images .* 1 file\(s\) skipped"):
        load_dataset(str(tmp_path))
    with pytest.raises(DataError, match="nowhere: no such file or folder"):
        load_dataset(str(tmp_path / "nowhere"))


# ---------------------------------------------------------------------------------------------
# Sprite sheets
# ---------------------------------------------------------------------------------------------

def sprite_sheet(path, rows=2, cols=3, cell=4, margin=1, spacing=2, blank=((1, 2),)):
    """A transparent sheet whose cell (r, c) is filled with the colour (r*50, c*50, 100)."""
    h = 2 * margin + rows * cell + (rows - 1) * spacing
    w = 2 * margin + cols * cell + (cols - 1) * spacing
    sheet = np.zeros((h, w, 4), np.uint8)
    for r in range(rows):
        for c in range(cols):
            if (r, c) in blank:
                continue
            y, x = margin + r * (cell + spacing), margin + c * (cell + spacing)
            sheet[y:y + cell, x:x + cell] = (r * 50, c * 50, 100, 255)
            sheet[y, x] = (255, 255, 0, 255)  # a corner mark so no cell is a flat colour
    save_png(path, sheet)
    return path


def test_sprite_sheet_cuts_the_right_cells(tmp_path):
    path = sprite_sheet(tmp_path / "sheet.png")
    ds = load_sprite_sheet(path, cell=4, margin=1, spacing=2, label_names=["top", "bottom"])
    assert ds.n == 5 and ds.size == 4  # 6 cells, the blank one dropped
    expected = [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]
    for img, (r, c) in zip(ds.images, expected):
        assert img[0, 0].tolist() == [255, 255, 0]
        assert (img.reshape(-1, 3)[1:] == (r * 50, c * 50, 100)).all()
    assert ds.labels.tolist() == [[1, 0]] * 3 + [[0, 1]] * 2
    keep_all = load_sprite_sheet(path, cell=4, margin=1, spacing=2, skip_blank=False, size=8)
    assert keep_all.n == 6 and keep_all.size == 8 and keep_all.n_labels == 0
    assert (keep_all.images[5] == 255).all()  # the blank cell is white


def test_sprite_sheet_errors(tmp_path):
    path = sprite_sheet(tmp_path / "sheet.png")
    with pytest.raises(DataError, match="sheet.png: a single image; .* cell size"):
        load_dataset(str(path))
    assert load_dataset(str(path), cell=4, margin=1, size=8).size == 8
    with pytest.raises(DataError, match="1 label names for 2 rows"):
        load_sprite_sheet(path, cell=4, margin=1, spacing=2, label_names=["one"])
    with pytest.raises(DataError, match="does not fit"):
        load_sprite_sheet(path, cell=64)


# ---------------------------------------------------------------------------------------------
# Context specs
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec,expected", [
    ("hero", [1, 0, 0, 0, 0]),
    ("HERO", [1, 0, 0, 0, 0]),
    ("hero+food:0.6", [1, 0, 0.6, 0, 0]),
    ("hero 1.0 + food 0.6", [1, 0, 0.6, 0, 0]),
    ("side-facing=0.5", [0, 0, 0, 0, 0.5]),
    ("2", [0, 0, 1, 0, 0]),
    ("0.5,0,1,0,0", [0.5, 0, 1, 0, 0]),
    ("", [0, 0, 0, 0, 0]),
    ("none", [0, 0, 0, 0, 0]),
])
def test_context_from_spec(spec, expected):
    ctx = context_from_spec(spec, course_label_names())
    assert ctx.dtype == np.float32 and ctx.tolist() == pytest.approx(expected)


def test_context_names_with_spaces():
    ctx = context_from_spec("animal & nature:0.5+symbol & flag", EMOJI_LABELS)
    assert ctx.tolist() == [0, 0, 0.5, 0, 0, 1]


@pytest.mark.parametrize("spec,message", [
    ("dragon", r"unknown label 'dragon'; valid labels: hero, non-hero, food, spell, side-facing"),
    ("hero+dragon:2", "unknown label 'dragon:2'"),
    ("7", "unknown label '7'"),
    ("1,0,0", "expected 5 numbers from -100 to 100"),
    ("1,x,0,0,0", "numbers separated by commas"),
])
def test_context_errors(spec, message):
    with pytest.raises(DataError, match=message):
        context_from_spec(spec, course_label_names())


def test_label_edits_are_pure_functions_of_the_label_matrix():
    from core.labels import add_label, assign_label, delete_label, free_label_name, move_label, rename_label

    labels = np.array([[1, 0], [0, 1], [1, 1]], np.float32)
    names = ["a", "New label"]
    grown, grown_names = add_label(labels, names)
    assert grown.shape == (3, 3) and not grown[:, 2].any() and grown_names == ["a", "New label", "new label 2"]
    assert free_label_name(["x"]) == "new label" and add_label(labels, names, "b")[1][-1] == "b"
    assert rename_label(names, 0, "z") == ["z", "New label"] and names == ["a", "New label"]
    fewer, fewer_names = delete_label(labels, names, 0)
    assert fewer_names == ["New label"] and np.array_equal(fewer, labels[:, 1:])
    swapped, swapped_names = move_label(labels, names, 0, 1)
    assert swapped_names == ["New label", "a"] and np.array_equal(swapped, labels[:, ::-1])
    assigned, changed = assign_label(labels, np.array([0, 1]), 1, True)
    assert changed == 1 and assigned[:, 1].tolist() == [1, 1, 1] and labels[0, 1] == 0  # a copy
    assert assign_label(labels, np.array([2]), 0, False)[1] == 1


def test_mirror_safe_keeps_direction_clocks_writing_and_flags_unmirrored():
    from core.data import mirror_safe

    names = ["dog", "point_left", "man_walking_facing_right", "clock130", "newspaper", "heart", "grinning",
             "arrow_up", "donut"]
    labels = np.zeros((len(names), 3), np.float32)
    labels[:, 0] = 1
    labels[5, :] = [0, 0, 1]  # "heart" filed under symbol & flag: the whole row is never mirrored
    ok = mirror_safe(names, labels, ["animal", "food", "symbol & flag"])
    assert ok.tolist() == [True, False, False, False, False, False, True, False, True]


def test_the_builtin_set_carries_its_mirror_mask_through_subset_and_save(tmp_path):
    ds = load_builtin("emoji16")
    assert ds.mirror_ok is not None and ds.mirror_ok.dtype == np.bool_
    flag_col = ds.label_names.index("symbol & flag")
    assert not ds.mirror_ok[ds.labels[:, flag_col] > 0].any()  # no flag, sign or arrow is flipped
    food = ds.labels[:, ds.label_names.index("food")] > 0
    assert ds.mirror_ok[food].mean() > 0.9  # food is almost all mirror-safe
    sub = ds.subset(np.arange(10, 30))
    assert (sub.mirror_ok == ds.mirror_ok[10:30]).all()
    back = load_npz(save_npz(sub, tmp_path / "sub.npz"))
    assert (back.mirror_ok == sub.mirror_ok).all()
    with pytest.raises(DataError, match="mirror_ok"):
        ImageDataset(ds.images[:2], ds.labels[:2], ds.label_names, "x", mirror_ok=np.ones(3, bool))


def test_a_label_folder_whose_name_is_not_utf8_is_refused_when_read(tmp_path):
    import os

    root = tmp_path / "set"
    root.mkdir()
    bad = os.path.join(os.fsencode(root), b"caf\xe9")  # Latin-1 bytes: not UTF-8
    try:
        os.mkdir(bad)
    except OSError:
        pytest.skip("this file system only takes UTF-8 names")
    Image.new("RGB", (16, 16), (200, 10, 10)).save(os.fsdecode(os.path.join(bad, b"a.png")))
    (root / "good").mkdir()
    Image.new("RGB", (16, 16), (10, 10, 200)).save(root / "good" / "b.png")
    with pytest.raises(DataError, match=r"not valid text .*rename that folder"):
        load_image_folder(root)
