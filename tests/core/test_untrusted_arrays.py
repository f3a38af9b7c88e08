"""Tensors and arrays of untrusted files, and the sizes they ask for (issue 25): checkpoint and resume tensors of
the wrong dtype or shape, NaN weights, course .pth files with tensors of another rank, data sets whose arrays
are of the wrong dtype, shape or count or whose headers lie about their size, an image size no network is
built for, a model larger than the memory left. Each is refused with the project's own error, naming the
file, before anything large is allocated. The JSON side: test_untrusted_files.py."""
import io
import json
import math
import zipfile
from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from toy_data import blob_squares
from untrusted_helpers import assert_names, copy_run, header_file, meta_with, model_checkpoint, patch, tiny_run

from core import memory
from core.checkpoint import CheckpointError, load_checkpoint, load_course_weights, read_metadata
from core.data import DataError, ImageDataset, load_dataset, load_image_folder, load_npz, save_npz
from core.training import TRAIN_PRESETS, Trainer
from core.unet import ContextUnet, UNetConfig





# --- model files -------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model_header(tmp_path_factory) -> dict:
    return model_checkpoint(tmp_path_factory.mktemp("ck"))


@pytest.mark.parametrize("change, words", [
    (lambda t, k: {k: t[k].to(torch.int32)}, "I32 values where floating-point"),
    (lambda t, k: {k: t[k] > 0}, "BOOL values"),
    (lambda t, k: {k: torch.zeros(3)}, "do not match the configuration"),
    (lambda t, k: {"bogus": torch.zeros(1)}, "unexpected tensor bogus"),
    (lambda t, k: {k: torch.full_like(t[k], math.nan)}, "NaN or infinite"),
])
def test_tensors_of_the_wrong_dtype_or_shape_are_refused(scratch, model_header, change, words):
    work = scratch()
    tensors = load_file(str(model_header["path"]))
    key = next(k for k, v in tensors.items() if v.is_floating_point())
    path = header_file(work, model_header["meta"], tensors={**tensors, **change(tensors, key)})
    with pytest.raises(CheckpointError, match=words) as e:
        load_checkpoint(path)
    assert_names(e, "bad.safetensors")


def test_a_config_that_asks_for_a_huge_network_is_refused_before_it_is_built(scratch, model_header):
    work = scratch()
    meta = meta_with(model_header, "unet_config", n_feat=1024, height=512)  # ~69 billion parameters
    path = header_file(work, meta, tensors=load_file(str(model_header["path"])))
    with pytest.raises(CheckpointError, match="bad.safetensors: weights do not match the configuration"):
        load_checkpoint(path)


# --- course weight files --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def course_state():
    return ContextUnet(UNetConfig(n_feat=8, n_cfeat=5, height=8, course_compat=True)).state_dict()


@pytest.mark.parametrize("changes", [
    {"init_conv.conv1.0.weight": torch.zeros(8)}, {"contextembed1.model.0.weight": torch.tensor(1.0)},
    {"up0.0.weight": torch.zeros(16)}, {"init_conv.conv1.0.weight": torch.zeros(100_000, 3, 1, 1)},
    {"init_conv.conv1.0.weight": torch.zeros(1024, 3, 3, 3), "up0.0.weight": torch.zeros(16, 16, 128, 128)},
    {"out.3.weight": torch.full((3, 8, 3, 3), math.nan)}, {"init_conv.conv1.0.weight": [1, 2]},
    {"up0.0.weight": None},
], ids=["1d", "0d", "up0-1d", "too-wide", "inconsistent-huge", "nan", "not-a-tensor", "missing"])
def test_course_weight_files_with_odd_tensors_are_refused(scratch, course_state, changes):
    work = scratch()
    sd = {**course_state, **changes}
    torch.save({k: v for k, v in sd.items() if v is not None}, work / "w.pth")
    with pytest.raises(CheckpointError) as e:
        load_course_weights(work / "w.pth")
    assert_names(e, "w.pth")


# --- resume files ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return tiny_run(tmp_path_factory.mktemp("run") / "run")


def _first(path, prefix, suffix=""):
    return next(k for k, v in load_file(str(path)).items() if k.startswith(prefix) and k.endswith(suffix)
                and v.is_floating_point() and v.ndim)


@pytest.mark.parametrize("make", [
    lambda p: {"tensors": {"rng": load_file(str(p))["rng"].float()}},
    lambda p: {"tensors": {"rng": torch.zeros(10, dtype=torch.uint8)}},
    lambda p: {"drop_tensors": ("rng",)},
    lambda p: {"tensors": {_first(p, "opt.", "exp_avg"): torch.zeros(3)}},
    lambda p: {"tensors": {(k := _first(p, "opt.", "exp_avg")): torch.full_like(load_file(str(p))[k], math.nan)}},
    lambda p: {"tensors": {_first(p, "opt.", "exp_avg").replace("exp_avg", "step"): torch.zeros(3)}},
    lambda p: {"tensors": {"opt.99999.exp_avg": torch.zeros(3)}},
    lambda p: {"tensors": {(k := _first(p, "model.")): load_file(str(p))[k].to(torch.int64)}},
    lambda p: {"tensors": {(k := _first(p, "ema.")): torch.full_like(load_file(str(p))[k], math.inf)}},
    lambda p: {"meta": {"param_groups": json.dumps([{**_groups(p)[0], "params": [0]}])}},
    lambda p: {"meta": {"opt_scalars": json.dumps({"999999.step": 1})}},
], ids=["rng-float", "rng-short", "rng-missing", "opt-shape", "opt-nan", "opt-step-shape", "opt-far-index",
        "model-int", "ema-inf", "groups-short", "scalar-far-index"])
def test_resume_tensors_and_optimizer_state_are_checked_against_the_network(scratch, run, make):
    work = scratch()
    folder = copy_run(run, work)
    before = (folder / "loss.csv").read_bytes()
    patch(folder / "resume.safetensors", **make(folder / "resume.safetensors"))
    with pytest.raises(CheckpointError) as e:
        Trainer.from_run(run[1], folder, device="cpu")
    assert_names(e, "resume.safetensors")
    assert (folder / "loss.csv").read_bytes() == before  # refused before the log is cut back


def _groups(path):
    with safe_open(str(path), "pt") as f:
        return json.loads(f.metadata()["param_groups"])


def test_a_damaged_model_file_of_a_run_is_rewritten_from_its_resume_file(scratch, run):
    work = scratch()
    folder = copy_run(run, work)
    patch(folder / "model.safetensors", meta={"extra": "[]"})
    tr = Trainer.from_run(run[1], folder, device="cpu")
    tr.close()
    assert any("model.safetensors was unreadable" in n for n in tr.notes)
    assert read_metadata(folder / "model.safetensors")["step"] == 2


# --- data-set files -----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def npz_arrays(tmp_path_factory):
    ds = ImageDataset(np.zeros((4, 8, 8, 3), np.uint8), np.eye(2, dtype=np.float32)[[0, 1, 0, 1]], ["a", "b"], "t")
    path = tmp_path_factory.mktemp("npz") / "d.npz"
    save_npz(ds, path)
    return dict(np.load(path))


def _fake_header(shape, dtype="|u1") -> bytes:
    """An .npy header that claims `shape`, followed by a few bytes: a size lie."""
    from numpy.lib import format as npf

    buf = io.BytesIO()
    npf.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue() + b"\0" * 16


U8, F32 = np.uint8, np.float32


@pytest.mark.parametrize("changes", [
    {"images": np.zeros((0, 8, 8, 3), U8), "labels": np.zeros((0, 2), F32)}, {"images": np.zeros((4, 8, 8), U8)},
    {"images": np.zeros((4, 8, 8, 3), F32)}, {"images": np.zeros((4, 8, 8, 3), np.int64)},
    {"images": np.zeros((4, 8, 6, 3), U8)}, {"labels": np.zeros((4, 2), np.int64)}, {"labels": np.zeros((3, 2), F32)},
    {"labels": np.full((4, 2), np.nan, F32)}, {"labels": np.zeros(4, F32)}, {"label_names": np.array([["a", "b"]])},
    {"label_names": np.array([1, 2])}, {"label_names": np.array(["a"])}, {"label_names": np.array(["a" * 300, "b"])},
    {"label_names": np.array(["", "b"])}, {"name": np.array([["a"]])}, {"mirror_ok": np.ones(3, bool)},
    {"mirror_ok": np.ones(4, U8)}, {"images": None}, {"labels": None}, {"label_names": None},
], ids=["zero-images", "images-3d", "images-float", "images-int64", "not-square", "labels-int", "labels-rows",
        "labels-nan", "labels-1d", "names-2d", "names-numbers", "names-count", "name-long", "name-empty", "name-2d",
        "mirror-rows", "mirror-uint8", "no-images", "no-labels", "no-names"])
def test_data_set_arrays_of_the_wrong_dtype_or_shape_are_refused(scratch, npz_arrays, changes):
    work = scratch()
    arrays = {k: v for k, v in {**npz_arrays, **changes}.items() if v is not None}
    np.savez(work / "bad.npz", **arrays)
    with pytest.raises(DataError) as e:
        load_npz(work / "bad.npz")
    assert_names(e, "bad.npz")


@pytest.mark.parametrize("member, data", [
    ("images.npy", _fake_header((10**6, 512, 512, 3))), ("labels.npy", _fake_header((10**9, 4096), "<f4")),
    ("images.npy", _fake_header((2,), "|O")), ("images.npy", b"not an array"),
], ids=["images-size-lie", "labels-size-lie", "object-array", "garbage"])
def test_array_headers_are_checked_before_anything_is_allocated(scratch, npz_arrays, member, data):
    work = scratch()
    np.savez(work / "good.npz", **npz_arrays)
    with zipfile.ZipFile(work / "good.npz") as src, zipfile.ZipFile(work / "bad.npz", "w") as dst:
        for info in src.infolist():
            dst.writestr(info.filename, data if info.filename == member else src.read(info.filename))
    with pytest.raises(DataError) as e:
        load_npz(work / "bad.npz")
    assert_names(e, "bad.npz")


@pytest.mark.parametrize("images, labels", [
    (np.zeros((0, 8, 8, 3), U8), None), (np.zeros(8, U8), None), (_fake_header((10**6, 512, 512, 3)), None),
    (np.zeros((4, 8, 8, 3), U8), np.array([0, 1, 2, 10**9])), (np.zeros((4, 8, 8, 3), U8), np.zeros((5, 2), F32)),
], ids=["zero", "1d", "size-lie", "huge-class-id", "rows"])
def test_course_npy_files_are_checked(scratch, images, labels):
    work = scratch()
    path = work / "sprites_x.npy"
    path.write_bytes(images) if isinstance(images, bytes) else np.save(path, images)
    if labels is not None:
        np.save(work / "sprite_labels_nc_x.npy", labels)
    with pytest.raises(DataError) as e:
        load_dataset(str(path))
    assert_names(e, "sprites_x.npy", "sprite_labels_nc_x.npy")


@pytest.mark.parametrize("size", [100_000, -4, 0, 3, 2.5])
def test_the_image_size_of_a_folder_is_checked_before_any_image_is_resized(scratch, size):
    work = scratch()
    from PIL import Image

    (work / "a").mkdir()
    Image.new("RGB", (8, 8)).save(work / "a" / "x.png")
    with pytest.raises(DataError) as e:
        load_image_folder(work, size=size)
    assert_names(e, str(work))
    assert "--size" in str(e.value)


# --- what training asks for ----------------------------------------------------------------------------------------

def test_training_on_a_data_set_without_images_or_of_an_untrainable_size_is_refused(scratch):
    work = scratch()
    cfg = replace(TRAIN_PRESETS["tiny"], precision="fp32")
    for ds in (ImageDataset(np.zeros((0, 8, 8, 3), U8), np.zeros((0, 1), F32), ["a"], "empty", "empty.npz"),
               ImageDataset(np.zeros((2, 10, 10, 3), U8), np.zeros((2, 1), F32), ["a"], "odd", "odd.npz")):
        with pytest.raises(DataError, match=ds.source):
            Trainer(ds, cfg, work / ds.name, device="cpu")


def test_a_model_too_large_for_the_memory_left_is_refused_before_it_is_built(scratch, monkeypatch):
    work = scratch()
    monkeypatch.setattr(memory, "available_bytes", lambda device: 2**30)
    cfg = replace(TRAIN_PRESETS["tiny"], n_feat=1024, batch_size=4096, precision="fp32")
    with pytest.raises(memory.NotEnoughMemory, match=r"would need about [\d,.]+ GB .* has 1.0 GB free; .*--batch"):
        Trainer(blob_squares(4), cfg, work / "r", device="cpu")
    assert memory.training_bytes(UNetConfig(n_feat=1024, n_cfeat=2, height=512), 1, 1) > 2**40
