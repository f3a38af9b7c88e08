"""The malformed inputs of tests/adversarial_cases.py, one Case each: what file or flag it spoils, how, and
what a clean refusal must name. Each setup writes its input into a fresh folder and returns the CLI's argv."""
from __future__ import annotations

import io
import json
import os
import shutil
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

DEPTH_BOMB = "[" * 100_000
OBJECT_BOMB = '{"a":' * 50_000


@dataclass
class Case:
    name: str
    setup: Callable[[Path, "Base"], list[str]]  # writes the malformed input into a fresh folder; returns argv
    names: tuple[str, ...]  # what a clean message must name (any one of them)
    expect: str = "fail"  # "fail": refused; "ok": repaired or ignored, exit 0
    env: dict = field(default_factory=dict)  # None as a value removes the variable


@dataclass
class Base:
    """Shared inputs built once: a tiny data set, a trained run, a course weight file, an image folder."""
    root: Path
    data: Path
    run: Path
    course_pth: Path
    images: Path


# --- building blocks -----------------------------------------------------------------------------------

def patch_safetensors(src: Path, dst: Path, meta: dict | None = None, drop_meta=(), tensors: dict | None = None,
                      drop_tensors=()) -> Path:
    """A copy of a safetensors file with header entries or tensors replaced or removed."""
    with safe_open(str(src), framework="pt") as f:
        header = {k: v for k, v in {**(f.metadata() or {}), **(meta or {})}.items() if k not in drop_meta}
    ts = {k: v for k, v in {**load_file(str(src)), **(tensors or {})}.items() if k not in drop_tensors}
    save_file(ts, str(dst), metadata=header)
    return dst


def header_json(path: Path, key: str) -> dict | list:
    with safe_open(str(path), framework="pt") as f:
        return json.loads(f.metadata()[key])


def first_float_key(path: Path, prefix: str = "") -> str:
    return next(k for k, v in load_file(str(path)).items() if k.startswith(prefix) and v.is_floating_point()
                and v.ndim >= 1)


def write(path: Path, content) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = content if isinstance(content, (str, bytes)) else json.dumps(content)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def fake_npy_header(shape: tuple, dtype: str = "|u1") -> bytes:
    """An .npy whose header claims `shape` but whose data is a few bytes: a size lie."""
    from numpy.lib import format as npf

    buf = io.BytesIO()
    npf.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue() + b"\0" * 64


# --- the case list -----------------------------------------------------------------------------------------

def train_new(b: Base, ws: Path, *extra) -> list[str]:
    return ["train", "--data", str(b.data), "--out", str(ws / "new"), "--preset", "tiny", "--steps", "2", "--batch",
            "8", "--precision", "fp32", "--device", "cpu", *extra]


def sample(ck: Path, ws: Path, *extra) -> list[str]:
    return ["sample", "--device", "cpu", "--checkpoint", str(ck), "--out", str(ws / "o.png"), "--n", "2",
            "--sampler", "ddim", "--steps", "2", *extra]


def config_cases() -> list[Case]:
    texts = {
        "depth_list": DEPTH_BOMB, "depth_object": OBJECT_BOMB, "top_list": "[1]", "top_null": "null", "top_number": "5",
        "top_string": '"steps"', "empty": "", "binary": b"\xff\xfe\x00\x01", "oversize": '{"steps": 2' + " " * 3_000_000 + "}",
        "steps_string": '{"steps": "4"}', "steps_float": '{"steps": 4.5}', "steps_bool": '{"steps": true}',
        "steps_null": '{"steps": null}', "steps_inf": '{"steps": 1e400}', "steps_bigint": '{"steps": ' + "9" * 40 + "}",
        "steps_negative": '{"steps": -3}', "lr_nan": '{"lr": NaN}', "lr_inf": '{"lr": Infinity}', "lr_list": '{"lr": [1]}',
        "hflip_int": '{"hflip": 1}', "network_number": '{"network": 5}', "nested_value": '{"steps": {"a": [1]}}',
        "seed_huge": '{"seed": 1e30}', "lr_bigint": '{"lr": ' + "9" * 400 + "}",
    }

    def make(key, text):
        def setup(ws, b):
            return train_new(b, ws, "--config", str(write(ws / f"cfg_{key}.json", text)))
        return Case(f"config/{key}", setup, (f"cfg_{key}.json",))
    cases = [make(k, t) for k, t in texts.items()]
    huge = Case("config/huge_model", lambda ws, b: ["train", "--data", str(b.data), "--out", str(ws / "new"), "--config",
                                                    str(write(ws / "cfg_huge.json", '{"n_feat": 1024, "batch_size": 4096}'))],
                ("--n-feat", "--batch"))  # the memory estimate names the flags that set what the file asked for
    cases.append(huge)
    cases.append(Case("flags/huge_model", lambda ws, b: train_new(b, ws, "--n-feat", "1024", "--batch", "65536"),
                      ("--n-feat", "--batch", "GB")))
    return cases


def checkpoint_cases() -> list[Case]:
    cases = []

    def meta_case(name, **meta):
        def setup(ws, b):
            return sample(patch_safetensors(b.run / "model.safetensors", ws / f"{name}.safetensors", meta=meta), ws)
        return Case(f"checkpoint/{name}", setup, (f"{name}.safetensors",))

    def cfg_case(name, key, *extra, **changes):
        def setup(ws, b):
            src = b.run / "model.safetensors"
            text = json.dumps({**header_json(src, key), **changes}, allow_nan=True)
            return sample(patch_safetensors(src, ws / f"{name}.safetensors", meta={key: text}), ws, *extra)
        return Case(f"checkpoint/{name}", setup, (f"{name}.safetensors",))

    for key in ("unet_config", "schedule_config", "label_names", "train_config", "extra"):
        cases.append(meta_case(f"{key}_depth", **{key: DEPTH_BOMB}))
    for text, tag in (("null", "null"), ("[]", "list"), ('"x"', "string"), ("5", "number")):
        cases += [meta_case(f"unet_config_{tag}", unet_config=text), meta_case(f"schedule_config_{tag}", schedule_config=text)]
    cases += [
        meta_case("label_names_null", label_names="null"), meta_case("label_names_string", label_names='"cat"'),
        meta_case("label_names_numbers", label_names="[1, 2]"), meta_case("label_names_count", label_names='["cat"]'),
        meta_case("label_names_empty", label_names='["", "dog"]'),
        meta_case("label_names_long", label_names=json.dumps(["c" * 200_000, "dog"])),
        meta_case("train_config_list", train_config="[1]"), meta_case("extra_list", extra="[]"),
        meta_case("step_text", step="abc"), meta_case("step_negative", step="-5"), meta_case("step_float", step="1e400"),
        meta_case("step_huge", step="9" * 30),
        cfg_case("n_feat_string", "unet_config", n_feat="8"), cfg_case("n_feat_bool", "unet_config", n_feat=True),
        cfg_case("n_feat_huge", "unet_config", n_feat=10**30), cfg_case("in_channels_2", "unet_config", in_channels=2),
        cfg_case("network_number", "unet_config", network=5), cfg_case("dropout_nan", "unet_config", dropout=float("nan")),
        cfg_case("height_huge", "unet_config", height=100_000),
        # a configuration that asks for a very large network while the file holds a tiny one
        cfg_case("huge_network", "unet_config", n_feat=1024, height=512),
        cfg_case("huge_desk_network", "unet_config", n_feat=1024, height=512, network="desk", n_cfeat=2),
        cfg_case("T_string", "schedule_config", T="500"), cfg_case("T_100000", "schedule_config", T=100_000),
        cfg_case("T_negative", "schedule_config", T=-1),
        cfg_case("betas_tiny", "schedule_config", beta1=1e-300, beta2=1e-300),
        cfg_case("betas_tiny_karras", "schedule_config", "--spacing", "karras", beta1=1e-300, beta2=1e-300),
        cfg_case("beta2_huge", "schedule_config", beta2=0.9999999), cfg_case("beta1_nan", "schedule_config", beta1=float("nan")),
        cfg_case("kind_number", "schedule_config", kind=5), cfg_case("prediction_null", "schedule_config", prediction=None),
    ]

    def init_case(name, **meta):
        def setup(ws, b):
            ck = patch_safetensors(b.run / "model.safetensors", ws / f"{name}.safetensors", meta=meta)
            return train_new(b, ws, "--init", str(ck))
        return Case(f"init/{name}", setup, (f"{name}.safetensors",))
    cases += [init_case("label_names_null", label_names="null"), init_case("schedule_depth", schedule_config=DEPTH_BOMB),
              init_case("unet_height_string", unet_config='{"height": "8", "n_feat": 8, "n_cfeat": 2}'),
              init_case("step_text", step="x")]

    def tensor_case(name, change):
        def setup(ws, b):
            src = b.run / "model.safetensors"
            return sample(patch_safetensors(src, ws / f"{name}.safetensors", tensors=change(src)), ws)
        return Case(f"checkpoint/{name}", setup, (f"{name}.safetensors",))
    cases += [
        tensor_case("weight_int", lambda s: {(k := first_float_key(s)): load_file(str(s))[k].to(torch.int32)}),
        tensor_case("weight_bool", lambda s: {(k := first_float_key(s)): load_file(str(s))[k] > 0}),
        tensor_case("weight_shape", lambda s: {first_float_key(s): torch.zeros(3)}),
        tensor_case("weight_extra", lambda s: {"bogus.weight": torch.zeros(2)}),
    ]
    return cases


def course_cases() -> list[Case]:
    def pth_case(name, change):
        def setup(ws, b):
            sd = torch.load(b.course_pth, weights_only=True)
            sd.update(change(sd))
            torch.save(sd, ws / f"{name}.pth")
            return sample(ws / f"{name}.pth", ws)
        return Case(f"course/{name}", setup, (f"{name}.pth",))
    return [
        pth_case("init_1d", lambda sd: {"init_conv.conv1.0.weight": torch.zeros(8)}),
        pth_case("context_0d", lambda sd: {"contextembed1.model.0.weight": torch.tensor(1.0)}),
        pth_case("up0_1d", lambda sd: {"up0.0.weight": torch.zeros(16)}),
        pth_case("width_huge", lambda sd: {"init_conv.conv1.0.weight": torch.zeros(100_000, 3, 1, 1)}),
        # the keys disagree: a wide network from one tensor, a large image from another (tiny tensors both)
        pth_case("inconsistent_huge", lambda sd: {"init_conv.conv1.0.weight": torch.zeros(1024, 3, 3, 3),
                                                  "up0.0.weight": torch.zeros(16, 16, 128, 128)}),
        pth_case("nan_weights", lambda sd: {"out.3.weight": torch.full_like(sd["out.3.weight"], float("nan"))}),
        pth_case("not_tensors", lambda sd: {"init_conv.conv1.0.weight": [1, 2]}),
    ]


def resume_cases() -> list[Case]:
    def copy_run(ws, b):
        shutil.copytree(b.run, ws / "run")
        return ws / "run"

    def resume_argv(b, run):
        return ["train", "--data", str(b.data), "--out", str(run), "--resume", "--steps", "6", "--device", "cpu"]

    def head(name, meta=None, drop=(), tensors=None, drop_tensors=(), file="resume.safetensors", expect="fail"):
        def setup(ws, b):
            run = copy_run(ws, b)
            t = tensors(run / file) if callable(tensors) else tensors
            patch_safetensors(run / file, run / file, meta=meta, drop_meta=drop, tensors=t, drop_tensors=drop_tensors)
            return resume_argv(b, run)
        return Case(f"{'resume' if file.startswith('resume') else 'run_model'}/{name}", setup, (file,), expect=expect)

    def edit(kind, name, key, change):  # one field of the resume file's own info or parameter group
        def setup(ws, b):
            path = copy_run(ws, b) / "resume.safetensors"
            patch_safetensors(path, path, meta={key: json.dumps(change(header_json(path, key)))})
            return resume_argv(b, path.parent)
        return Case(f"resume/{kind}_{name}", setup, ("resume.safetensors",))

    def info(name, **changes):
        return edit("info", name, "info", lambda v: {**v, **changes})

    def group(name, **changes):
        return edit("group", name, "param_groups", lambda v: [{**v[0], **changes}])

    def opt_key(path):
        return next(k for k in load_file(str(path)) if k.startswith("opt.") and k.endswith(".exp_avg"))

    def diverged(name, text):
        def setup(ws, b):
            run = copy_run(ws, b)
            write(run / "diverged.json", text)
            return resume_argv(b, run)
        return Case(f"diverged/{name}", setup, ("diverged", "run"))

    cases = [head(f"no_{k}", drop=(k,)) for k in ("opt_scalars", "param_groups", "info", "step", "format")]
    cases += [head(f"{k}_depth", meta={k: DEPTH_BOMB}) for k in ("info", "param_groups", "opt_scalars")]
    cases += [head(f"info_{tag}", meta={"info": text}) for tag, text in (("list", "[]"), ("null", "null"), ("string", '"x"'))]
    cases += [info("elapsed_text", elapsed="abc"), info("elapsed_null", elapsed=None), info("elapsed_negative", elapsed=-1),
              info("elapsed_inf", elapsed=float("inf")), info("world_size_negative", world_size=-1),
              info("world_size_text", world_size="2"), info("world_size_huge", world_size=10**30),
              info("world_size_zero", world_size=0), info("run_id_number", run_id=5), info("train_config_list", train_config=[1]),
              info("train_config_bad_value", train_config={"steps": "x"}), info("fingerprint_number", dataset_fingerprint=5),
              info("rank_rng_number", world_size=1, rank_rng_states=5)]
    cases += [head(f"step_{tag}", meta={"step": text}) for tag, text in
              (("negative", "-5"), ("text", "abc"), ("float", "1e400"), ("huge", "9" * 30), ("empty", ""))]
    cases += [head(f"param_groups_{tag}", meta={"param_groups": text}) for tag, text in
              (("object", "{}"), ("numbers", "[5]"), ("empty", "[]"), ("params_text", '[{"params": "x"}]'))]
    cases += [group("lr_text", lr="abc"), group("betas_text", betas="abc"), group("betas_three", betas=[0.9, 0.99, 0.1]),
              group("eps_null", eps=None), group("weight_decay_negative", weight_decay=-1.0),
              group("params_short", params=[0]), group("params_out_of_range", params=list(range(10**4, 10**4 + 200)))]
    cases += [head(f"opt_scalars_{tag}", meta={"opt_scalars": text}) for tag, text in
              (("list", "[]"), ("bad_key", '{"x": 1}'), ("bad_index", '{"a.step": 1}'), ("text_value", '{"0.step": "x"}'),
               ("far_index", '{"999999.step": 1}'))]
    cases += [
        head("rng_float", tensors=lambda p: {"rng": load_file(str(p))["rng"].float()}),
        head("rng_short", tensors={"rng": torch.zeros(10, dtype=torch.uint8)}),
        head("rng_2d", tensors=lambda p: {"rng": load_file(str(p))["rng"].reshape(2, -1)}),
        head("rng_missing", drop_tensors=("rng",)),
        head("opt_shape", tensors=lambda p: {opt_key(p): torch.zeros(3)}),
        head("opt_nan", tensors=lambda p: {(k := opt_key(p)): torch.full_like(load_file(str(p))[k], float("nan"))}),
        head("opt_step_shape", tensors=lambda p: {opt_key(p).replace("exp_avg", "step"): torch.zeros(3)}),
        head("opt_far_index", tensors={"opt.99999.exp_avg": torch.zeros(3)}),
        head("opt_int", tensors=lambda p: {(k := opt_key(p)): load_file(str(p))[k].to(torch.int64)}),
        head("model_nan", tensors=lambda p: {(k := first_float_key(p, "model.")): torch.full_like(load_file(str(p))[k], float("nan"))}),
        head("model_shape", tensors=lambda p: {first_float_key(p, "model."): torch.zeros(3)}),
        head("ema_int", tensors=lambda p: {(k := first_float_key(p, "ema.")): load_file(str(p))[k].to(torch.int32)}),
        # the model file of a run is made from its resume file: a damaged one is rewritten on resume (said in a note)
        head("extra_list", meta={"extra": "[]"}, file="model.safetensors", expect="ok"),
        head("extra_run_id_number", meta={"extra": '{"run_id": 5}'}, file="model.safetensors", expect="ok"),
        head("step_negative", meta={"step": "-1"}, file="model.safetensors", expect="ok"),
        head("train_config_list", meta={"train_config": "[1]"}, file="model.safetensors", expect="ok"),
        head("label_names_depth", meta={"label_names": DEPTH_BOMB}, file="model.safetensors", expect="ok"),
    ]
    cases += [diverged("step_inf", '{"step": 1e400, "reason": "x"}'), diverged("step_text", '{"step": "x", "reason": "x"}'),
              diverged("depth", DEPTH_BOMB), diverged("list", "[1]")]
    return cases


def lock_cases() -> list[Case]:
    host = socket.gethostname()

    def lock(name, content, expect="ok"):
        def setup(ws, b):
            write(ws / "new" / "run.lock", content)
            return train_new(b, ws)
        return Case(f"lock/{name}", setup, ("run.lock", str("new")), expect=expect)
    return [
        lock("pid_huge", {"pid": 10**30, "host": host, "since": 0}), lock("pid_negative", {"pid": -1, "host": host, "since": 0}),
        lock("pid_zero", {"pid": 0, "host": host, "since": 0}), lock("pid_text", {"pid": "abc", "host": host, "since": 0}),
        lock("pid_bool", {"pid": True, "host": host, "since": 0}), lock("pid_float", {"pid": 1.5, "host": host, "since": 0}),
        lock("host_number", {"pid": 1, "host": 5, "since": 0}), lock("host_null", {"pid": 1, "host": None, "since": 0}),
        lock("since_text", {"pid": 4_000_000, "host": host, "since": "x"}),
        lock("since_inf", '{"pid": 4000000, "host": "%s", "since": 1e400}' % host),
        lock("depth", DEPTH_BOMB), lock("list", "[1, 2]"), lock("binary", b"\xff\xfe\x00"),
        lock("other_host", {"pid": 123, "host": "elsewhere.example", "since": 0}, expect="fail"),
        lock("live_holder", {"pid": os.getppid(), "host": host, "since": 0}, expect="fail"),
    ]


def data_cases() -> list[Case]:
    def train_on(data, ws, *extra):
        return ["train", "--data", *data, "--out", str(ws / "new"), "--preset", "tiny", "--steps", "2", "--batch", "8",
                "--device", "cpu", *extra]

    def npz(case, **arrays):
        def setup(ws, b):
            np.savez(ws / f"{case}.npz", **{k: v for k, v in {**np.load(b.data), **arrays}.items() if v is not None})
            return train_on([str(ws / f"{case}.npz")], ws)
        return Case(f"data/{case}", setup, (f"{case}.npz",))

    def raw(name, suffix, content, labels_file=False):
        def setup(ws, b):
            p = ws / f"{name}{suffix}"
            content(p, b) if callable(content) else write(p, content)
            return train_on([str(p.with_name("imgs.npy")), "--labels", str(p)] if labels_file else [str(p)], ws)
        return Case(f"data/{name}", setup, (f"{name}{suffix}",))

    def npz_member(name, member, data):
        def content(p, b):
            import zipfile
            src = zipfile.ZipFile(b.data)
            with zipfile.ZipFile(p, "w") as z:
                for info in src.infolist():
                    z.writestr(info.filename, data if info.filename == member else src.read(info.filename))
        return raw(name, ".npz", content)

    def folder(name, *extra):
        return Case(f"data/{name}", lambda ws, b: train_on([str(b.images)], ws, *extra), ("--size", "images"))

    u8 = np.uint8
    return [
        npz("zero_images", images=np.zeros((0, 8, 8, 3), u8), labels=np.zeros((0, 2), np.float32)),
        npz("images_3d", images=np.zeros((32, 8, 8), u8)), npz("images_float", images=np.zeros((32, 8, 8, 3), np.float32)),
        npz("images_int64", images=np.zeros((32, 8, 8, 3), np.int64)),
        npz("images_1000px", images=np.zeros((1, 1000, 1000, 3), u8), labels=np.zeros((1, 2), np.float32)),
        npz("images_10px", images=np.zeros((32, 10, 10, 3), u8)),
        npz("labels_5000", labels=np.zeros((32, 5000), np.float32), label_names=np.array([f"l{i}" for i in range(5000)])),
        npz("labels_missing", labels=None), npz("labels_int", labels=np.zeros((32, 2), np.int64)),
        npz("labels_rows", labels=np.zeros((31, 2), np.float32)), npz("labels_nan", labels=np.full((32, 2), np.nan, np.float32)),
        npz("label_names_2d", label_names=np.array([["cat", "dog"]])), npz("label_names_numbers", label_names=np.array([1, 2])),
        npz("label_names_long", label_names=np.array(["c" * 100_000, "dog"])),
        npz("name_2d", name=np.array([["a", "b"]])), npz("mirror_ok_shape", mirror_ok=np.ones(3, bool)),
        npz_member("images_size_lie", "images.npy", fake_npy_header((10**6, 512, 512, 3))),
        npz_member("labels_size_lie", "labels.npy", fake_npy_header((10**9, 4096), "<f4")),
        npz_member("images_object", "images.npy", fake_npy_header((2,), "|O")),
        raw("course_labels_huge_id", ".npy", lambda p, b: (np.save(p.with_name("imgs.npy"), np.zeros((4, 8, 8, 3), u8)),
                                                       np.save(p, np.array([0, 1, 2, 10**9]))), labels_file=True),
        raw("course_images_size_lie", ".npy", fake_npy_header((10**6, 512, 512, 3))),
        raw("course_images_zero", ".npy", lambda p, b: np.save(p, np.zeros((0, 8, 8, 3), u8))),
        raw("course_images_1d", ".npy", lambda p, b: np.save(p, np.zeros(8, u8))),
        folder("size_100000", "--size", "100000"), folder("size_negative", "--size", "-4"), folder("size_zero", "--size", "0"),
    ]


def env_cases() -> list[Case]:
    dist = {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": None, "MASTER_PORT": None}
    return [Case(f"env/timeout_{tag}", lambda ws, b: train_new(b, ws), ("DIFFUSION_DESK_DIST_TIMEOUT",),
                 env={**dist, "DIFFUSION_DESK_DIST_TIMEOUT": text})
            for tag, text in (("inf", "inf"), ("nan", "nan"), ("text", "abc"), ("negative", "-5"), ("zero", "0"),
                              ("overflow", "1e400"), ("huge", "1e300"))]


def bench_cases() -> list[Case]:
    def report(name, text, what="report"):
        def setup(ws, b):
            p = write(ws / f"{name}.json", text)
            return ["bench", what, "--json", str(p), "--docs", str(ws / "docs")]
        return Case(f"bench/{name}", setup, (f"{name}.json",))
    return [report("depth", DEPTH_BOMB), report("list", "[1]"), report("number", "5"), report("string", '"x"'),
            report("quality_number", '{"quality": 5}'), report("quality_results_text", '{"quality": {"results": "x"}}'),
            report("sample_list", '{"sample": []}'), report("machine_text", '{"machine": "x", "train": {}}'),
            report("peak_list", "[1]", what="peak"), report("binary", b"\xff\xfe"),
            report("train_throughput_text", '{"train": {"throughput": "x"}}'),
            report("oversize", '{"x": "' + "a" * 70_000_000 + '"}')]


def all_cases() -> list[Case]:
    cases = (config_cases() + checkpoint_cases() + course_cases() + resume_cases() + lock_cases() + data_cases()
             + env_cases() + bench_cases())
    return cases
