"""Checkpoints: round trip with metadata, atomic writes, clear errors for wrong or damaged files."""
import json
from unittest import mock

import pytest
import torch

from core.checkpoint import (CheckpointError, atomic_write_bytes, load_checkpoint, read_metadata,
                             save_checkpoint)
from core.schedule import ScheduleConfig
from core.unet import ContextUnet, UNetConfig


def _save(path, n_feat=8):
    torch.manual_seed(0)
    net = ContextUnet(UNetConfig(n_feat=n_feat, n_cfeat=3, height=8))
    save_checkpoint(path, net.state_dict(), unet_config=net.config, schedule_config=ScheduleConfig(kind="cosine"),
                    label_names=["a", "b", "c"], dataset="blobs", fingerprint="abc123", step=42, precision="bf16",
                    train_config={"lr": 0.001})
    return net


def test_round_trip_keeps_weights_and_metadata(tmp_path):
    net = _save(tmp_path / "m.safetensors")
    bundle = load_checkpoint(tmp_path / "m.safetensors")
    assert bundle.net.config == net.config and bundle.schedule_config.kind == "cosine"
    assert bundle.label_names == ["a", "b", "c"] and bundle.meta["step"] == 42
    assert bundle.meta["dataset_fingerprint"] == "abc123" and bundle.meta["precision"] == "bf16"
    assert not bundle.net.training
    assert bundle.net.init_conv.conv1[0].weight.is_contiguous(memory_format=torch.channels_last)  # the fast layout
    for k, v in net.state_dict().items():
        assert torch.equal(bundle.net.state_dict()[k], v)
    assert "step 42" in bundle.description


def test_truncated_file_gets_a_clear_error(tmp_path):
    _save(tmp_path / "m.safetensors")
    data = (tmp_path / "m.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.safetensors"):
        load_checkpoint(tmp_path / "cut.safetensors")


def test_foreign_and_missing_files(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(CheckpointError, match="not a Diffusion Desk checkpoint"):
        load_checkpoint(tmp_path / "other.safetensors")
    (tmp_path / "text.safetensors").write_text("hello")
    with pytest.raises(CheckpointError, match="text.safetensors: not a readable"):
        load_checkpoint(tmp_path / "text.safetensors")
    with pytest.raises(CheckpointError, match="no such file"):
        load_checkpoint(tmp_path / "missing.safetensors")


def test_weights_that_do_not_match_the_config(tmp_path):
    _save(tmp_path / "m.safetensors")
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(tmp_path / "m.safetensors"), "pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    meta["unet_config"] = json.dumps({**json.loads(meta["unet_config"]), "n_feat": 16})
    save_file(tensors, str(tmp_path / "bad.safetensors"), metadata=meta)
    with pytest.raises(CheckpointError, match="do not match"):
        load_checkpoint(tmp_path / "bad.safetensors")


def test_a_failed_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "m.safetensors"
    _save(path)
    before = path.read_bytes()
    with mock.patch("os.replace", side_effect=OSError(28, "No space left on device")):
        with pytest.raises(OSError):
            _save(path, n_feat=16)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temp file left behind
    assert read_metadata(path)["step"] == 42


def test_atomic_write_creates_folders(tmp_path):
    atomic_write_bytes(tmp_path / "a" / "b" / "x.bin", b"123")
    assert (tmp_path / "a" / "b" / "x.bin").read_bytes() == b"123"
