"""`main.py grid`: an X/Y grid PNG with its settings in text chunks, and one line for each bad axis or output."""
from __future__ import annotations

import json
import shutil

import pytest
from PIL import Image

from cli import main
from core.paths import default_checkpoint, file_digest
from core.xy_grid import GridSpec


def test_a_grid_png_carries_every_setting_and_the_model_hash(tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert main(["grid", "--x", "sampler=ddim,dpmpp2m", "--y", "steps=1,2", "--n", "2", "--context", "face",
                 "--precision", "fp32", "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [(c["row"], c["col"], c["nfe"]) for c in report["cells"]] == [(0, 0, 1), (0, 1, 1), (1, 0, 2), (1, 1, 2)]
    text = Image.open(out).text
    assert text["x"] == "sampler=ddim,dpmpp2m" and text["y"] == "steps=1,2"
    assert text["model_sha256"] == file_digest(default_checkpoint())
    spec = GridSpec.from_dict(json.loads(text["settings"])["grid"])
    assert spec.base.context == "face" and spec.per_cell == 2 and spec.shape == (2, 2)


def test_a_grid_guided_inside_an_interval_says_so_and_counts_its_calls(tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert main(["grid", "--x", "guidance=1,2", "--steps", "4", "--sampler", "ddim", "--spacing", "trailing",
                 "--n", "1", "--context", "face",
                 "--guidance-interval", "0.3,0.8", "--guidance-rescale", "0.5", "--precision", "fp32",
                 "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    spec = GridSpec.from_dict(json.loads(Image.open(out).text["settings"])["grid"])
    assert spec.base.guidance_interval == (0.3, 0.8) and spec.base.guidance_rescale == 0.5
    # 4 trailing steps from t/T 1: 1, 0.75, 0.5, 0.25; two inside 0.3-0.8 are guided
    assert [c["nfe"] for c in report["cells"]] == [4, 6]


@pytest.mark.parametrize("argv, says", [
    (["--x", "steps"], "--x 'steps': write NAME=V1,V2"),
    (["--x", "steps=1", "--y", "steps=2"], "both axes are 'steps'"),
    (["--x", "context=face,dragon"], "unknown label 'dragon'"),
    (["--x", "steps=1,9999"], "9999 is not from 1 to 1000"),
    (["--x", "steps=1", "--n", "0"], "images per cell 0"),
    (["--x", "guide=nolabel,model", "--guidance", "2"], "guide=model needs a guide model"),
    (["--x", "steps=1", "--guidance-interval", "0.9,0.1"], "--guidance-interval: need 0 <= LO <= HI <= 1"),
    (["--x", "steps=1", "--guidance-rescale", "3"], "--guidance-rescale 3.0: out of range"),
])
def test_a_bad_grid_is_exit_2_and_one_line(tmp_path, capsys, argv, says):
    out = tmp_path / "g.png"
    assert main(["grid", *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()


def test_the_grid_never_replaces_the_model_or_a_file_of_another_kind(tmp_path, capsys):
    model = tmp_path / "model.safetensors"
    shutil.copy(default_checkpoint(), model)
    before = model.read_bytes()
    assert main(["grid", "--checkpoint", str(model), "--x", "steps=1", "--out", str(model)]) == 2
    assert "input of this command" in capsys.readouterr().err and model.read_bytes() == before
    notes = tmp_path / "notes.png"
    notes.write_text("my notes")
    assert main(["grid", "--x", "steps=1", "--out", str(notes)]) == 2
    assert "not a PNG image" in capsys.readouterr().err and notes.read_text() == "my notes"
