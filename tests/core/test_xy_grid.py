"""core.xy_grid: axes parsed and checked before any model loads; each cell is exactly a single run."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from core.samplers import generate
from core.schedule import Schedule, ScheduleConfig
from core.unet import ContextUnet, UNetConfig
from core.xy_grid import (Axis, CellSettings, GridError, GridSpec, compose_grid, grid_labels, grid_text, parse_axis,
                          run_grid)

LABELS = ["hero", "food", "spell"]


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    net = ContextUnet(UNetConfig(n_feat=8, n_cfeat=3, height=8)).eval()
    with torch.no_grad():  # an untrained network barely hears its context: louder, so labels and guidance show
        for name, p in net.named_parameters():
            if "contextembed" in name:
                p.mul_(30)
    return net


@pytest.fixture(scope="module")
def schedule():
    return Schedule(ScheduleConfig(T=50))


def test_axes_parse_to_typed_values_and_aliases():
    assert parse_axis("sampler=ddim, heun") == Axis("sampler", ("ddim", "heun"))
    assert parse_axis("steps=5,10,20").values == (5, 10, 20)
    assert parse_axis("cfg=1,2.5").name == "guidance" and parse_axis("cfg=1,2.5").values == (1.0, 2.5)
    assert parse_axis("label=hero,food").name == "context"
    assert parse_axis("steps=5,10").text == "steps=5,10"


@pytest.mark.parametrize("text, says", [
    ("sampler", "NAME=V1,V2"), ("colour=red", "NAME=V1,V2"), ("steps=", "no values"),
    ("steps=0,5", "0 is not from 1 to 1000"), ("steps=abc", "'abc' is not a whole number"),
    ("sampler=bogus", "'bogus' is not one of"), ("guidance=nan", "not from 0 to 50"),
    ("mix=1.5", "not from 0 to 1"), ("seed=" + ",".join(map(str, range(17))), "at most 16"),
])
def test_a_bad_axis_is_one_line_naming_the_flag(text, says):
    with pytest.raises(GridError) as e:
        parse_axis(text, "--x")
    assert str(e.value).startswith(f"--x '{text}'") and says in str(e.value) and "\n" not in str(e.value)


def test_the_same_axis_twice_and_a_bad_cell_size_are_refused():
    with pytest.raises(GridError, match="both axes"):
        GridSpec(CellSettings(), parse_axis("steps=1,2"), parse_axis("steps=3"))
    with pytest.raises(GridError, match="images per cell"):
        GridSpec(CellSettings(), parse_axis("steps=1,2"), per_cell=0)


def test_check_names_unknown_labels_too_many_steps_and_a_missing_guide(schedule):
    spec = GridSpec(CellSettings(), parse_axis("context=hero,dragon"), parse_axis("steps=2,4"))
    with pytest.raises(GridError, match="dragon"):
        spec.check(LABELS, T=schedule.T, has_guide_model=False)
    with pytest.raises(GridError, match="50 noise levels"):
        GridSpec(CellSettings(), parse_axis("steps=10,60")).check(LABELS, T=50, has_guide_model=False)
    with pytest.raises(GridError, match="guide model"):
        GridSpec(CellSettings(guidance=2), parse_axis("guide=nolabel,model")).check(LABELS, T=50,
                                                                                   has_guide_model=False)
    with pytest.raises(GridError, match="no eta setting"):
        GridSpec(CellSettings(sampler="heun"), parse_axis("eta=0,1")).check(LABELS, T=50, has_guide_model=False)


def test_cells_vary_one_setting_per_axis_and_the_cheapest_run_first():
    spec = GridSpec(CellSettings(seed=3), parse_axis("sampler=ddim,heun"), parse_axis("steps=8,2"))
    assert spec.shape == (2, 2)
    assert spec.cell(1, 0) == CellSettings(sampler="ddim", steps=2, seed=3)
    assert spec.cell(0, 1) == CellSettings(sampler="heun", steps=8, seed=3)
    calls = [s.calls() for _, _, s in spec.order()]
    assert calls == sorted(calls) and calls[0] == 2
    assert grid_labels(spec) == (["ddim", "heun"], ["steps 8", "steps 2"])


def test_the_mix_weight_blends_two_labels():
    s = CellSettings(context="hero", mix_with="food", mix=0.25)
    assert np.allclose(s.context_vector(LABELS), [0.75, 0.25, 0.0])
    with pytest.raises(GridError, match="mix with"):
        CellSettings(context="hero", mix=0.5).context_vector(LABELS)


def test_every_cell_equals_a_single_run_with_its_settings(net, schedule):
    spec = GridSpec(CellSettings(sampler="ddim", steps=4, spacing="trailing", context="food", seed=5),
                    parse_axis("sampler=ddim,dpmpp2m"), parse_axis("guidance=1,2"), per_cell=3)
    cells = {(c.row, c.col): c for c in run_grid(net, schedule, spec, LABELS)}
    assert len(cells) == 4
    for (r, c), cell in cells.items():
        s = spec.cell(r, c)
        single = generate(net, schedule, sampler=s.sampler, steps=s.steps, n=3, seed=s.seed, guidance=s.guidance,
                          context=np.repeat(np.eye(3, dtype=np.float32)[1:2], 3, axis=0), spacing=s.spacing)
        assert np.array_equal(cell.images, single.images), (r, c)
        assert cell.nfe == single.nfe == s.calls()
    # one starting noise for the whole grid: the unguided ddim cell differs from the guided one only by guidance
    assert not np.array_equal(cells[0, 0].images, cells[1, 0].images)


def test_a_negative_label_guides_away_from_it(net, schedule):
    base = CellSettings(sampler="ddim", steps=3, spacing="trailing", context="hero", guidance=3.0, seed=1)
    spec = GridSpec(base, parse_axis("guide=nolabel,food"), per_cell=2)
    cells = {(c.row, c.col): c for c in run_grid(net, schedule, spec, LABELS)}
    ctx = np.repeat(np.eye(3, dtype=np.float32)[:1], 2, axis=0)
    single = generate(net, schedule, sampler="ddim", steps=3, n=2, seed=1, guidance=3.0, context=ctx,
                      negative_context=np.repeat(np.eye(3, dtype=np.float32)[1:2], 2, axis=0))
    assert np.array_equal(cells[0, 1].images, single.images)
    assert not np.array_equal(cells[0, 0].images, cells[0, 1].images)


def test_a_guidance_interval_and_rescale_reach_every_cell_and_survive_the_png(net, schedule):
    base = CellSettings(sampler="ddim", steps=6, spacing="trailing", context="hero", guidance=3.0, seed=2,
                        guidance_interval=(0.2, 0.7), guidance_rescale=0.5)
    spec = GridSpec(base, parse_axis("guidance=1,3"), per_cell=2)
    cells = {(c.row, c.col): c for c in run_grid(net, schedule, spec, LABELS)}
    ctx = np.repeat(np.eye(3, dtype=np.float32)[:1], 2, axis=0)
    single = generate(net, schedule, sampler="ddim", steps=6, n=2, seed=2, guidance=3.0, context=ctx,
                      guidance_interval=(0.2, 0.7), guidance_rescale=0.5)
    everywhere = generate(net, schedule, sampler="ddim", steps=6, n=2, seed=2, guidance=3.0, context=ctx)
    assert np.array_equal(cells[0, 1].images, single.images)
    assert not np.array_equal(single.images, everywhere.images)
    # one plain call per step outside the interval: t/T 1, 0.84, 0.66, 0.5, 0.34, 0.16; three inside 0.2-0.7
    assert cells[0, 1].nfe == single.nfe == 6 + 3 < spec.cell(0, 1).calls() == 12 and cells[0, 0].nfe == 6
    assert base.guidance_text() == ", guided at t/T 0.2-0.7, rescale 0.5"
    assert CellSettings(guidance=2.0).guidance_text() == "" and CellSettings(guidance_rescale=0.5).guidance_text() == ""
    again = GridSpec.from_dict(json.loads(grid_text(spec, "m.safetensors")["settings"])["grid"])
    assert again == spec and isinstance(again.base.guidance_interval, tuple)


@pytest.mark.parametrize("base, says", [
    ({"guidance_interval": [0.8, 0.2]}, "need 0 <= LO <= HI <= 1"),
    ({"guidance_interval": [0.1, float("nan")]}, "need 0 <= LO <= HI <= 1"),
    ({"guidance_interval": "0.1"}, "expected two numbers"),
    ({"guidance_rescale": 2}, "guidance rescale 2"),
    ({"guidance_rescale": "x"}, "guidance rescale 'x'"),
])
def test_a_damaged_guidance_setting_in_a_png_is_refused_in_one_line(base, says):
    with pytest.raises(GridError, match=says.replace("(", r"\(")):
        GridSpec.from_dict({"base": base, "x": ["steps", [1, 2]], "y": ["seed", []], "per_cell": 2})


def test_the_exported_grid_carries_settings_that_rebuild_it(net, schedule):
    spec = GridSpec(CellSettings(sampler="ddim", steps=2, context="hero+food:0.5"), parse_axis("seed=1,2,3"),
                    parse_axis("steps=1,2"), per_cell=4)
    cells = {(c.row, c.col): c for c in run_grid(net, schedule, spec, LABELS)}
    image = compose_grid(cells, spec, title="test")
    assert image.width > 3 * 4 * 8 and image.height > 2 * 8
    text = grid_text(spec, "model.safetensors", "abc")
    assert text["x"] == "seed=1,2,3" and text["y"] == "steps=1,2"
    again = GridSpec.from_dict(json.loads(text["settings"])["grid"])
    assert again == spec
    with pytest.raises(GridError, match="malformed"):
        GridSpec.from_dict({"base": {}, "x": ["steps"], "y": ["seed", []], "per_cell": 2})
