"""The recipe study's --report: one row per trained recipe, written to the study's own folder; the hand-written
docs/recipes.md is never touched (it once cut the page at a marker and appended the table)."""
from __future__ import annotations

import json


def test_the_report_writes_a_row_per_trained_recipe_into_the_study_folder(tmp_path, monkeypatch):
    from benchmarks import recipe_study

    # a real measurement's section as `bench quality --json` wrote it (the ramp-tuned samplers, 3 seeds)
    quality = json.loads((recipe_study.ROOT / "docs" / "bench_ramp_tuned.json").read_text())["quality"]
    for name in ("course", "desk"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "trained.txt").write_text("done")
        (tmp_path / name / "quality.json").write_text(json.dumps({"quality": quality}))
    (tmp_path / "v_zsnr").mkdir()  # not trained: no row
    recipes_page = recipe_study.ROOT / "docs" / "recipes.md"
    before = recipes_page.read_bytes()
    monkeypatch.setattr(recipe_study.subprocess, "run", lambda *a, **k: (_ for _ in ()).throw(AssertionError(a)))

    path = recipe_study.report(tmp_path, n=500, seeds=1)

    lines = path.read_text().splitlines()
    assert path == tmp_path / "table.md"
    assert lines[0] == "| recipe | model | " + " | ".join(r["entry"] for r in quality["results"]) + " |"
    assert lines[2].startswith(f"| course | {quality['model']} | 2.39 / 0.76 | 0.58 / 0.78 |")  # docs/fast.md's figures
    assert len(lines) == 4 and lines[3].startswith("| desk |")
    assert recipes_page.read_bytes() == before
