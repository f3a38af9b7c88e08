"""Smoke tests for benchmarks/: the course baseline's pieces and the bench tables at tiny sizes."""
from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

from benchmarks import bench, common, pages, quality, tables, train_speed
from benchmarks.course_baseline import CourseDiffusion, ContextUnet, Normalize, ToTensor, transform
from core.checkpoint import save_checkpoint
from core.data import load_builtin
from core.schedule import ScheduleConfig
from core.unet import ContextUnet as OurUnet
from core.unet import UNetConfig

EMOJI_LABELS = ["face", "person", "animal & nature", "food", "object", "symbol & flag"]


@pytest.fixture(autouse=True)
def _few_threads():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


# --- the course baseline ---------------------------------------------------------------------------------

def test_course_unet_forward_shape_and_fresh_shortcut():
    torch.manual_seed(0)
    net = ContextUnet(in_channels=3, n_feat=8, n_cfeat=6, height=16).eval()
    x = torch.randn(4, 3, 16, 16)
    t = torch.tensor([0.5])[:, None, None, None]  # the course's time tensor, broadcast over the batch
    with torch.no_grad():
        a, b = net(x, t, torch.eye(6)[:4]), net(x, t, torch.eye(6)[:4])
    assert a.shape == (4, 3, 16, 16)
    assert not torch.allclose(a, b)  # a new random 1x1 shortcut conv on every call, as the course runs it
    n_course = sum(p.numel() for p in net.parameters())
    ours = OurUnet(UNetConfig(n_feat=8, n_cfeat=6, height=16))
    assert sum(p.numel() for p in ours.parameters()) == n_course + 3 * 8 + 8  # ours registers that shortcut


def test_course_transforms_match_the_datasets_tensor():
    ds = load_builtin("emoji16").subset(np.arange(5))
    ours = ds.to_tensor()
    for i in range(5):
        torch.testing.assert_close(transform(ds.images[i]), ours[i], atol=1e-6, rtol=0)
    x = ToTensor()(np.full((2, 2, 3), 255, np.uint8))
    assert x.shape == (3, 2, 2) and x.max() == 1.0
    assert Normalize((0.5,), (0.5,))(x).max() == 1.0


def test_course_noising_keeps_the_bug_and_ddim_counts_calls():
    cd = CourseDiffusion(n_feat=8, n_cfeat=6)
    x, noise, t = torch.ones(1, 3, 2, 2), torch.ones(1, 3, 2, 2), torch.tensor([250])
    ab = cd.ab_t[250]
    torch.testing.assert_close(cd.perturb_input(x, t, noise), (ab.sqrt() + (1 - ab)).expand(1, 3, 2, 2))
    assert [cd.ddim_calls(n) for n in (25, 20, 10, 500)] == [25, 20, 10, 500]
    samples, frames = cd.sample_ddim_context(2, torch.eye(6)[:2], n=5)
    assert samples.shape == (2, 3, 16, 16) and frames.shape == (5, 2, 3, 16, 16)  # a numpy copy per step


def test_course_training_steps_run_through_the_dataloader():
    ds = load_builtin("emoji16").subset(np.arange(24))
    cd = CourseDiffusion(n_feat=8, n_cfeat=6, seed=0)
    steps = cd.train_steps(cd.make_dataloader(ds.images, ds.labels, batch_size=8))
    losses = [next(steps).item() for _ in range(4)]  # crosses an epoch boundary (3 batches per epoch)
    assert all(np.isfinite(losses))


# --- bench plumbing --------------------------------------------------------------------------------------

def test_parse_entries_with_modifiers_and_errors():
    e = common.parse_entries("ddpm:500, ddim:25+eta=1,dpmpp2m:10+clip+g=2, ddim")
    assert [x["steps"] for x in e] == [500, 25, 10, 25]
    assert e[1]["eta"] == 1.0 and e[2]["clip_x0"] and e[2]["guidance"] == 2.0
    for bad in ("euler:10", "ddim:0", "ddim:x", "ddim:10+foo", ""):
        with pytest.raises(common.BenchError):
            common.parse_entries(bad)


def _args(*argv):
    p = argparse.ArgumentParser()
    bench.add_arguments(p)
    return p.parse_args(list(argv))


def test_peak_and_sample_tables_build_with_tiny_settings(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert bench.run(_args("peak", "--quick", "--json", str(out))) == 0
    assert bench.run(_args("sample", "--quick", "--json", str(out))) == 0
    text = capsys.readouterr().out
    assert "matmul GFLOP/s" in text and "ms per call" in text and "DPM-Solver++(2M)-3" in text
    res = json.loads(out.read_text())
    assert res["peak"]["fp32"]["gflops"] > 0  # sections merge into one file
    rows = res["sample"]["results"]
    assert rows[0]["who"] == "course" and rows[0]["per_call_speedup"] == pytest.approx(1.0)
    assert all(r["calls"] > 0 and r["seconds"] > 0 for r in rows)


def test_train_table_builds_with_tiny_settings(capsys):
    s = bench.settings_from_args(_args("train", "--quick"))
    res = train_speed.bench_train(s, peak={"fp32": {"gflops": 100.0}, "bf16": {"gflops": 200.0}})
    assert res["throughput"]["course"]["ratio_vs_course"] == 1.0
    assert all(r["median_ips"] > 0 for r in res["throughput"].values())
    lc = res["loss_check"]
    assert len(lc["runs"]) == 2 * (2 if "ours bf16" in res["throughput"] else 1)
    assert all(np.isfinite(r["eval_loss"]) for r in lc["runs"])
    assert "held-out loss" in tables.print_section("train", res)


def _tiny_emoji_checkpoint(path):
    torch.manual_seed(0)
    cfg = UNetConfig(n_feat=8, n_cfeat=6, height=16)
    return save_checkpoint(path, OurUnet(cfg).state_dict(), unet_config=cfg, schedule_config=ScheduleConfig(),
                           label_names=EMOJI_LABELS, dataset="emoji16", step=1)


@pytest.mark.slow
def test_quality_report_and_docs_with_tiny_settings(tmp_path, capsys):
    ckpt = _tiny_emoji_checkpoint(tmp_path / "m.safetensors")
    docs = tmp_path / "docs"
    assert bench.run(_args("quality", "--quick", "--checkpoint", str(ckpt), "--docs", str(docs), "--report")) == 0
    res = json.loads((docs / "bench_results.json").read_text())
    q = res["quality"]
    assert [r["entry"] for r in q["results"]] == ["ddim:4", "dpmpp2m:3"]
    assert all(r["fid_mean"] > q["floor"]["mean"] for r in q["results"])  # untrained model vs real data
    md = (docs / "benchmarks.md").read_text()
    assert "feature-FID" in md and "quality_vs_time.png" in md and "CPU:" in md
    assert (docs / "quality_vs_time.png").stat().st_size > 1000 and (docs / "default_model_grid.png").is_file()
    assert bench.run(_args("report", "--docs", str(docs))) == 0  # rebuild the page from the JSON alone
    # --add measures more entries the same way and merges them; --retime re-measures only seconds
    js = str(docs / "bench_results.json")
    assert bench.run(_args("quality", "--quick", "--checkpoint", str(ckpt), "--json", js, "--add",
                           "--samplers", "ddim:2,ddim:4")) == 0
    q2 = json.loads((docs / "bench_results.json").read_text())["quality"]
    assert [r["entry"] for r in q2["results"]] == ["dpmpp2m:3", "ddim:2", "ddim:4"]
    assert q2["results"][0]["fid"] == q["results"][1]["fid"]  # kept, not recomputed
    assert bench.run(_args("quality", "--retime", "--quick", "--json", js)) == 0
    q3 = json.loads((docs / "bench_results.json").read_text())["quality"]
    assert "retimed" in q3 and [r["fid"] for r in q3["results"]] == [r["fid"] for r in q2["results"]]


def test_errors_are_one_line_and_exit_non_zero(tmp_path, capsys):
    assert bench.run(_args("quality", "--quick", "--checkpoint", str(tmp_path / "none.safetensors"))) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "none.safetensors" in err and "\n" not in err
    other = tmp_path / "o.safetensors"
    cfg = UNetConfig(n_feat=8, n_cfeat=2, height=16)
    save_checkpoint(other, OurUnet(cfg).state_dict(), unet_config=cfg, schedule_config=ScheduleConfig(),
                    label_names=["a", "b"])
    assert bench.run(_args("quality", "--quick", "--checkpoint", str(other))) == 2
    assert "emoji16" in capsys.readouterr().err
    assert bench.run(_args("report", "--docs", str(tmp_path / "empty"))) == 2


def _row(entry, fid, nfe, seconds=1.0):
    e = common.parse_entries(entry)[0]
    return {**e, "fid_mean": fid, "nfe": nfe, "seconds_32": seconds}


def test_judge_reports_the_target_like_for_like():
    q = {"guidance": 1.0, "results": [_row("ddpm:500", 10.0, 500, 20.0), _row("ddpm:500+g=2", 5.0, 1000, 40.0),
                                      _row("dpmpp2m:10+g=2", 5.2, 20, 0.3), _row("dpmpp2m:20", 13.0, 20, 0.3),
                                      _row("ddim:50", 9.0, 50, 0.8)]}
    common.judge_quality(q, course_ddpm_seconds=30.0)
    t = q["target"]
    assert t["entry"] == "dpmpp2m:10+g=2" and t["fid_met"]  # -48% against DDPM-500 without guidance
    assert t["same_guidance"]["gap"] == pytest.approx(0.04) and t["same_guidance"]["met"]
    assert t["unguided"]["entry"] == "dpmpp2m:20" and not t["unguided"]["met"]  # +30%
    assert t["time_fraction"] == pytest.approx(0.01)
    assert "ddim:50" not in t["summary"]  # 50 calls: not a candidate
    rows = common.target_rows({"quality": q})
    assert [r[-1] for r in rows] == ["met", "met", "missed", "met"]


def test_merge_quality_refuses_results_measured_differently():
    old = {"checkpoint": "a", "n": 1000, "n_seeds": 3, "precision": "bf16", "guidance": 1.0, "results": []}
    with pytest.raises(common.BenchError, match="n"):
        quality.merge_quality(old, {**old, "n": 500})


def test_the_ddp_section_prints_speedup_communication_share_and_the_batchnorm_losses():
    d = {"one_process_img_s": 100.0, "two_process_img_s": 150.0, "two_process_no_sync_img_s": 200.0, "speedup": 1.5,
         "communication_share": 0.25, "loss_steps": 200, "loss_n_feat": 32,
         "losses": [{"processes": 1, "batchnorm": "per_rank", "seed": 0, "eval_loss": 0.08, "train_loss_last50": 0.09,
                     "seconds": 60.0},
                    {"processes": 2, "batchnorm": "global", "seed": 0, "eval_loss": 0.081, "train_loss_last50": 0.091,
                     "seconds": 50.0}]}
    text = tables.print_section("ddp", d)
    rows = text.splitlines()
    two = next(r for r in rows if r.startswith("2 (1 thread each)"))
    assert "150" in two and "1.5" in two and "25%" in two
    assert any(r.startswith("2 process(es)") and "global" in r and "0.081" in r for r in rows)


def _thr(name, ips, course=100.0):
    return {"name": name, "median_ips": ips, "min_ips": ips, "max_ips": ips, "rounds": [ips],
            "ratio_vs_course": ips / course, "peak_fraction": None}


def test_targets_follow_the_issue_fp32_and_bf16_rows_busy_and_app(tmp_path):
    lc = {"steps": 3, "eval_n": 4, "seed_gap": 0.001, "precision_gap": 0.0, "within_noise": True,
          "runs": [{"precision": "fp32", "seed": 0, "eval_loss": 0.1, "train_loss_last50": 0.1, "seconds": 1.0}]}
    fp32_only = {"throughput": {"course": _thr("course", 100.0), "ours fp32": _thr("ours fp32", 108.0)},
                 "loss_check": lc}
    busy = {"idle_img_s": 400.0, "busy_tuned_img_s": 200.0, "busy_fixed_img_s": 100.0, "tuned_ratio": 0.5,
            "fixed_ratio": 0.25}
    app = {"steps": 150, "rounds": 2, "cli_img_s": 300.0, "app_img_s": 285.0, "app_vs_cli": 0.95,
           "busy": {"cli_img_s": 150.0, "app_img_s": 90.0, "cli_busy_vs_idle": 0.5, "app_busy_vs_idle": 90 / 285}}
    rows = {r[0]: r for r in common.target_rows({"train": fp32_only, "busy": busy, "app": app})}
    fp = rows["training images/s of the course network, batch 100: ours fp32"]
    assert fp[2] == "1.08x" and fp[3] == "missed"  # the goal is 1.1x
    assert rows["the same, ours bf16"][3] == "not measured"  # no bf16 contestant: never a verdict on it
    assert "loss after equal steps (bf16 vs fp32)" not in rows
    assert rows["training beside a process keeping one core busy: the CLI"][2:] == ["50%", "met"]
    assert rows["the same: the app"][2:] == ["32%", "missed"]
    assert rows["in-app training throughput vs the CLI, idle machine"][2:] == ["95%", "met"]
    both = {**fp32_only, "throughput": {**fp32_only["throughput"], "ours bf16": _thr("ours bf16", 260.0)}}
    rows = {r[0]: r for r in common.target_rows({"train": both})}
    assert rows["the same, ours bf16"][2:] == ["2.60x", "met"]
    md = pages.write_markdown({"train": {**fp32_only, "n_feat": 8, "n_params": 10, "batch_size": 100, "rounds": 1,
                                          "steps_per_round": 1, "gflop_per_image": 0.1},
                                "busy": busy, "app": app}, tmp_path)
    text = md.read_text()
    assert "bf16 was not run" in text and "Does bf16 hurt learning" not in text
    assert "## Training on a busy machine" in text and "## In the app vs on the command line" in text
    assert "| one core busy | 150 | 90 |" in text


def test_a_peak_from_another_machine_gives_no_percentages():
    here = common.machine_info()
    peak = {"fp32": {"gflops": 100.0}, "machine": {k: here[k] for k in ("cpu", "cores", "bf16")}}
    assert common.peak_here({"machine": here, "peak": peak}) is peak
    other = {**peak, "machine": {**peak["machine"], "cpu": "another CPU"}}
    assert common.peak_here({"machine": here, "peak": other}) is None
    assert common.peak_here({"machine": here}) is None


def test_the_onednn_profile_counts_convolution_flops_from_the_verbose_log():
    from benchmarks.profile_step import conv_flops, onednn_table

    conv = "mb100_ic64oc64_ih16oh16kh3sh1dh0ph1_iw16ow16kw3sw1dw0pw1"
    assert conv_flops("convolution", conv) == 2 * 100 * 64 * 64 * 9 * 16 * 16
    deconv = "mb100_ic128oc64_ih8oh16kh2sh2dh0ph0_iw8ow16kw2sw2dw0pw0"  # each input pixel scatters a 2x2 patch
    assert conv_flops("deconvolution", deconv) == 2 * 100 * 128 * 64 * 4 * 8 * 8
    log = "\n".join([
        "onednn_verbose,v1,info,cpu,runtime:OpenMP",
        f"onednn_verbose,v1,primitive,exec,cpu,convolution,jit:avx2,backward_weights,src:f32,attr,alg,{conv},20.0",
        f"onednn_verbose,v1,primitive,exec,cpu,convolution,brg_conv_fwd:avx2,forward_training,src:f32,attr,alg,{conv},10.0",
        "onednn_verbose,v1,primitive,exec,cpu,reorder,jit:uni,undef,src:f32,attr,,64x64x3x3,0.5"])
    text = "\n".join(onednn_table(log, 1, 200.0))
    g = conv_flops("convolution", conv) / 0.02 / 1e9  # 20 ms -> GFLOP/s
    assert f"| convolution | backward_weights | 64->64 ch, 16x16 in, 3x3 | jit:avx2 | 20.0 | 65.6% | {g:.0f} |" in text
    assert "30 ms per step in all" in text and f"{100 * g / 200:.0f}%" in text


def test_the_few_step_sweep_picks_the_steps_that_make_each_call_count():
    from benchmarks.few_step_sweep import sweep_entries

    got = sweep_entries(["ipndm+sp=karras", "heun+sp=karras"], [2, 3, 4, 10], zero_terminal=True)
    # one call per iPNDM step; Heun makes 2 per step minus its last and (from pure noise) its first
    assert got == ["ipndm:2+sp=karras", "ipndm:3+sp=karras", "ipndm:4+sp=karras", "ipndm:10+sp=karras",
                   "heun:2+sp=karras", "heun:3+sp=karras", "heun:6+sp=karras"]
    assert sweep_entries(["heun"], [3], zero_terminal=False) == ["heun:2"]  # 2 * 2 - 1 calls
    # sp=tuned: the model's own tuned-<steps> where it has one, nothing where it has none
    got = sweep_entries(["dpmpp3m+sp=tuned", "ipndm+sp=tuned+g=2"], [3, 4, 5], zero_terminal=True,
                        named=("tuned-3", "tuned-5", "tuned-ipndm-4"))
    assert got == ["dpmpp3m:3+sp=tuned-3", "dpmpp3m:5+sp=tuned-5", "ipndm:4+sp=tuned-ipndm-4+g=2"]


def test_side_by_side_panels_share_their_noise_and_never_replace_a_file(tmp_path):
    import numpy as np

    from benchmarks.pictures import main, same_noise_panels
    from core.paths import default_checkpoint

    ckpt = str(default_checkpoint())
    img = same_noise_panels([("a", ckpt, "ddim:2"), ("b", ckpt, "ddim:2"), ("c", ckpt, "ddim:3")], per_label=2)
    arr = np.asarray(img)
    cell, top, left = 16 * 4 + 2, 34, 130  # grid_image's layout: 4x tiles, 2 px gaps, no title
    width = 2 * cell + 20
    panel = [arr[top:top + 6 * cell, left + k * width:left + k * width + 2 * cell] for k in range(3)]
    assert np.array_equal(panel[0], panel[1])  # the same sampler from the same noise: the same pictures
    assert not np.array_equal(panel[0], panel[2]) and panel[0].std() > 10
    out = tmp_path / "p.png"
    assert main(["--panel", f"x={ckpt}|ddim:2", "--out", str(out), "--per-label", "1"]) == 0
    before = out.read_bytes()
    with pytest.raises(SystemExit):  # an existing file is never replaced
        main(["--panel", f"x={ckpt}|ddim:3", "--out", str(out), "--per-label", "1"])
    assert out.read_bytes() == before
