"""Every kind of untrusted JSON we read, and each of its fields, against malformed variants (issue 25): a depth
bomb, a type swap for every field, missing keys, huge numbers, NaN and infinities, negatives, empty values.
Each must raise the project's own error type in one line that names the file (or the flag or variable) it
came from; never RecursionError, KeyError, TypeError or OverflowError. Tensors and arrays:
test_untrusted_arrays.py; the same inputs through the CLI, counted: tests/adversarial_cases.py."""
import json
import os
import socket

import pytest
from untrusted_helpers import DEPTH_BOMB, SWAPS, assert_names, header_file, meta_with, model_checkpoint, swaps, tiny_run

import cli
from benchmarks.common import BenchError, load_json
from core.checkpoint import CheckpointError, load_resume_state, read_metadata
from core.config import TRAIN_FIELDS
from core.distributed import TIMEOUT_ENV, timeout_seconds
from core.errors import UserError
from core.runlock import LOCK_FILE, PID_MAX, RunLock, _parse_lock
from core.schema import Float, Int, List, Obj, Str, check, load_json_text, nesting_depth
from core.training.resume import diverged_note





# --- the validator itself ----------------------------------------------------------------------------------

@pytest.mark.parametrize("text", [DEPTH_BOMB, '{"a":' * 50_000, "[" * 9 + "]" * 9])
def test_nesting_is_refused_before_json_parses_it(text):
    with pytest.raises(UserError, match="x.json: JSON nested more than 8 levels"):
        load_json_text(text, source="x.json", max_bytes=10**6, max_depth=8)


def test_brackets_inside_strings_do_not_count_and_sizes_are_checked_first():
    assert nesting_depth('[1, "[[[\\"[[", {"a": [2]}]', 8) == 3
    with pytest.raises(UserError, match="x.json: 12 characters of JSON, more than the 10 "):
        load_json_text("[1, 2, 3, 4]", source="x.json", max_bytes=10, max_depth=8)
    with pytest.raises(UserError, match="x.json: not valid JSON .NaN is not a number"):
        load_json_text('{"a": NaN}', source="x.json", max_bytes=100, max_depth=8, allow_nan=False)


@pytest.mark.parametrize("value, schema, message", [
    ({"pid": "abc"}, Obj({"pid": Int(1, 4194304)}), "f: field 'pid' must be an integer between 1 and 4194304, got 'abc'"),
    ({"pid": True}, Obj({"pid": Int(1, 9)}), "field 'pid' must be an integer between 1 and 9, got true"),
    ({}, Obj({"pid": Int(1, 9)}), "f: field 'pid' is missing"),
    ({"a": [1, "x"]}, Obj({"a": List(Int(0, 9), 5)}), "field 'a[1]' must be an integer"),
    ({"a": 10**400}, Obj({"a": Float(0, 1)}), "field 'a' must be a finite number between 0 and 1, got 1000"),
    ({"b": 1}, Obj({}, extra=None), "f: field 'b' is not a field this file has"),
    ([1], Obj(), "f: must be a JSON object, got a list of 1 item(s)"),
    ("x" * 300, Str(200), "f: must be text of at most 200 characters, got 'xxx"),
])
def test_check_names_the_file_and_the_field(value, schema, message):
    with pytest.raises(UserError) as e:
        check(value, schema, "f")
    assert message in str(e.value)


# --- run.lock ------------------------------------------------------------------------------------------------

LOCK_FIELDS = {"pid": "int", "host": "str", "since": "float"}


def _lock(**changes):
    return json.dumps({"pid": 123, "host": socket.gethostname(), "since": 0, **changes}).encode()


@pytest.mark.parametrize("field, value", swaps(LOCK_FIELDS) + [
    pytest.param("pid", 0, id="pid=0"), pytest.param("pid", -1, id="pid=-1"),
    pytest.param("pid", PID_MAX + 1, id="pid=max+1"), pytest.param("host", "", id="host=empty")])
def test_a_damaged_lock_is_read_as_unreadable_with_the_reason(field, value):
    info, problem = _parse_lock(_lock(**{field: value}))
    assert info == {} and problem.startswith(f"{LOCK_FILE}: field '{field}'"), problem


@pytest.mark.parametrize("raw", [DEPTH_BOMB.encode(), b"[1]", b"null", b"\xff\xfe", b'{"pid": 1', b'{"host": "h"}'])
def test_a_lock_that_is_not_an_object_of_ours_is_replaced_with_a_note(scratch, raw):
    work = scratch()
    (work / LOCK_FILE).write_bytes(raw)
    lock = RunLock(work).acquire()
    try:
        assert lock.held and "removed an unreadable lock file" in lock.note and f"({LOCK_FILE}: " in lock.note
    finally:
        lock.release()


# --- the diverged-run note -------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", [DEPTH_BOMB, "[1]", '{"reason": "x"}', '{"step": 1e400, "reason": "x"}',
                                  '{"step": -1, "reason": "x"}', '{"step": 5, "reason": ["x"]}', "\xff"])
def test_a_damaged_diverged_note_is_unreadable_not_a_crash(scratch, text):
    work = scratch()
    (work / "diverged.json").write_text(text, errors="surrogateescape")
    assert diverged_note(work) == "(its note is unreadable)"


# --- checkpoint metadata ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model_header(tmp_path_factory) -> dict:
    return model_checkpoint(tmp_path_factory.mktemp("ck"))


UNET_FIELDS = {"in_channels": "int", "n_feat": "int", "n_cfeat": "int", "height": "int", "course_compat": "bool",
               "network": "str", "dropout": "float"}
SCHEDULE_FIELDS = {"kind": "str", "T": "int", "beta1": "float", "beta2": "float", "cosine_s": "float",
                   "prediction": "str"}


@pytest.mark.parametrize("field, value", swaps(UNET_FIELDS))
def test_every_unet_config_field_is_checked(scratch, model_header, field, value):
    work = scratch()
    path = header_file(work, meta_with(model_header, "unet_config", **{field: value}))
    with pytest.raises(CheckpointError) as e:
        read_metadata(path)
    assert_names(e, "bad.safetensors")


@pytest.mark.parametrize("field, value", swaps(SCHEDULE_FIELDS) + [
    pytest.param("T", 100_000, id="T=100000"), pytest.param("T", 0, id="T=0"),
    pytest.param("beta1", 1e-300, id="tiny-beta1"), pytest.param("beta2", 0.9999999, id="huge-beta2")])
def test_every_schedule_field_is_checked_and_betas_the_numbers_cannot_carry_are_refused(scratch, model_header, field,
                                                                                        value):
    work = scratch()
    changes = {field: value, "beta2": 1e-300} if field == "beta1" and value == 1e-300 else {field: value}
    path = header_file(work, meta_with(model_header, "schedule_config", **changes))
    with pytest.raises(CheckpointError) as e:
        read_metadata(path)
    assert_names(e, "bad.safetensors")


@pytest.mark.parametrize("key, text", [
    *[pytest.param(k, DEPTH_BOMB, id=f"{k}-depth") for k in ("unet_config", "schedule_config", "label_names",
                                                              "train_config", "extra")],
    *[pytest.param(k, json.dumps(v), id=f"{k}={v!r:.10}") for k in ("unet_config", "schedule_config", "train_config",
                                                                     "extra") for v in SWAPS["obj"]],
    *[pytest.param("label_names", json.dumps(v), id=f"labels={v!r:.10}") for v in
      SWAPS["list"] + [[1, 2], ["", "dog"], ["c" * 300, "dog"], ["cat"] * 5000]],
    *[pytest.param("extra", json.dumps({k: v}), id=f"extra.{k}={v!r:.10}") for k, kind in
      {"elapsed": "float", "run_id": "str"}.items() for v in SWAPS[kind]],
    *[pytest.param("step", v, id=f"step={v:.10}") for v in ("abc", "-5", "1e400", "9" * 30, "", "1.5")],
    pytest.param("unet_config", "{", id="broken-json"), pytest.param("label_names", "x" * (2 << 20), id="oversize"),
])
def test_every_header_value_is_checked(scratch, model_header, key, text):
    work = scratch()
    path = header_file(work, {**model_header["meta"], key: text})
    with pytest.raises(CheckpointError) as e:
        read_metadata(path)
    assert_names(e, "bad.safetensors")


@pytest.mark.parametrize("key", ["unet_config", "schedule_config", "label_names"])
def test_a_missing_header_key_is_named(scratch, model_header, key):
    work = scratch()
    path = header_file(work, {k: v for k, v in model_header["meta"].items() if k != key})
    with pytest.raises(CheckpointError, match=f"bad.safetensors: field '{key}' is missing"):
        read_metadata(path)


# --- resume files ---------------------------------------------------------------------------------------------

INFO_FIELDS = {"dataset": "str", "dataset_fingerprint": "str", "elapsed": "float", "run_id": "str",
               "train_config": "obj", "world_size": "int", "rank_rng_states": "list", "loss_scale": "obj"}
GROUP_FIELDS = {"params": "list", "lr": "float", "initial_lr": "float", "betas": "list", "eps": "float",
                "weight_decay": "float", "amsgrad": "bool", "maximize": "bool", "foreach": "flag", "capturable": "bool",
                "differentiable": "bool", "fused": "flag", "decoupled_weight_decay": "bool"}


class Raw(str):
    """A header value written as this very text (not as JSON)."""


def _resume_cases():
    out = [pytest.param(k, None, Raw(DEPTH_BOMB), id=f"{k}-depth") for k in ("info", "param_groups", "opt_scalars")]
    out += [pytest.param("info", None, v, id=f"info={v!r:.10}") for v in SWAPS["obj"]]
    out += [pytest.param("info", k, v, id=f"info.{k}={v!r:.10}") for k, kind in INFO_FIELDS.items() for v in SWAPS[kind]]
    out += [pytest.param("info", "loss_scale", v, id=f"loss_scale={v!r:.22}")
            for v in ({"scale": 0.0, "growth_tracker": 0}, {"scale": 1e300, "growth_tracker": 0},
                      {"scale": 1024.0, "growth_tracker": -1}, {"scale": 1024.0})]
    out += [pytest.param("param_groups", None, v, id=f"groups={v!r:.10}") for v in SWAPS["list"] + [[], [5]]]
    out += [pytest.param("param_groups", k, v, id=f"group.{k}={v!r:.10}") for k, kind in GROUP_FIELDS.items()
            for v in SWAPS[kind]]
    out += [pytest.param("param_groups", "betas", b, id=f"betas={b}") for b in ([0.9], [0.9, 1.0], [0.9, 0.99, 0.1])]
    out += [pytest.param("opt_scalars", None, v, id=f"scalars={v!r:.10}")
            for v in SWAPS["obj"] + [{"x": 1}, {"a.step": 1}, {"0.step": "x"}]]
    out += [pytest.param("step", None, Raw(v), id=f"step={v:.8}") for v in ("-5", "abc", "1e400", "9" * 30, "")]
    return out


@pytest.fixture(scope="module")
def resume_header(tmp_path_factory) -> dict:
    from safetensors import safe_open

    run, _ = tiny_run(tmp_path_factory.mktemp("run") / "run", steps=0)  # saved before any step: a header to spoil
    with safe_open(str(run / "resume.safetensors"), "pt") as f:
        return dict(f.metadata())


# The header is checked before any tensor is read, so these files hold the run's header and one small tensor.
@pytest.mark.parametrize("key, field, value", _resume_cases())
def test_every_resume_header_field_is_checked(scratch, resume_header, key, field, value):
    work = scratch()
    if field is not None:  # one field of the run's own info or first parameter group
        real = json.loads(resume_header[key])
        value = {**real, field: value} if key == "info" else [{**real[0], field: value}]
    text = value if isinstance(value, Raw) else json.dumps(value)
    path = header_file(work, {**resume_header, key: text}, name="resume.safetensors")
    with pytest.raises(CheckpointError) as e:
        load_resume_state(path)
    assert_names(e, "resume.safetensors")


@pytest.mark.parametrize("key", ["step", "info", "param_groups", "opt_scalars", "format"])
def test_a_missing_resume_key_is_named(scratch, resume_header, key):
    work = scratch()
    path = header_file(work, {k: v for k, v in resume_header.items() if k != key}, name="resume.safetensors")
    with pytest.raises(CheckpointError) as e:
        load_resume_state(path)
    assert_names(e, "resume.safetensors")


# --- --config --------------------------------------------------------------------------------------------------

CONFIG_FIELDS = {f.key: {int: "int", float: "float", str: "str", bool: "bool"}[f.type] for f in TRAIN_FIELDS}


def _config_error(work, text) -> str:
    path = work / "settings.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    args = cli.build_parser().parse_args(["train", "--out", str(work / "o"), "--config", str(path)])
    with pytest.raises(cli.CliError) as e:
        cli.train.train_config(args)
    return str(e.value)


@pytest.mark.parametrize("field, value", swaps(CONFIG_FIELDS))
def test_every_config_field_is_type_checked(scratch, field, value):
    work = scratch()
    message = _config_error(work, json.dumps({field: value}))
    assert message.startswith(f"--config {work / 'settings.json'}: ") and "\n" not in message


@pytest.mark.parametrize("text", [DEPTH_BOMB, '{"a":' * 50_000, "[1]", "null", "5", '"x"', "", b"\xff\xfe",
                                  '{"steps": 2' + " " * (2 << 20) + "}", '{"steps": ' + "9" * 5000 + "}"],
                         ids=["depth", "object-depth", "list", "null", "number", "string", "empty", "binary",
                              "oversize", "digits"])
def test_a_config_file_that_is_not_a_small_object_is_refused(scratch, text):
    work = scratch()
    assert _config_error(work, text).startswith(f"--config {work / 'settings.json'}: ")


# --- benchmark results --------------------------------------------------------------------------------------------

SECTIONS = {k: "obj" for k in ("machine", "settings", "commands", "peak", "sample", "quality", "train", "ddp", "busy",
                                "app")}
QUALITY = {"entry": "str", "sampler": "str", "steps": "int", "nfe": "int", "clip_x0": "bool", "fid_mean": "number",
           "seconds_32": "float"}
GOOD_ENTRY = {"entry": "ddim:10", "sampler": "ddim", "steps": 10, "nfe": 10, "clip_x0": False, "fid_mean": 1.0,
              "seconds_32": 1.0}


def _bench_cases():
    out = [pytest.param(DEPTH_BOMB, id="depth"), pytest.param("[1]", id="list"), pytest.param("5", id="number")]
    out += [pytest.param(json.dumps({k: v}), id=f"{k}={v!r:.10}") for k, kind in SECTIONS.items() for v in SWAPS[kind]]
    out += [pytest.param(json.dumps({"regenerate": v}), id=f"regenerate={v!r:.10}") for v in SWAPS["str"]]
    good = {"results": [GOOD_ENTRY], "guidance": 1.0, "precision": "fp32"}
    out += [pytest.param(json.dumps({"quality": {**good, k: v}}), id=f"quality.{k}={v!r:.10}") for k, kind in
            {"results": "list", "guidance": "number", "precision": "str", "n": "int", "n_seeds": "int"}.items()
            for v in SWAPS[kind]]
    out += [pytest.param(json.dumps({"quality": {**good, "results": [{**GOOD_ENTRY, k: v}]}}), id=f"entry.{k}={v!r:.8}")
            for k, kind in QUALITY.items() for v in SWAPS[kind]]
    out += [pytest.param(json.dumps({"sample": {"course_ddpm_seconds": v}}), id=f"course_s={v!r:.8}")
            for v in SWAPS["number"]]
    out += [pytest.param(json.dumps({"peak": {"machine": v}}), id=f"peak.machine={v!r:.8}") for v in SWAPS["obj"]]
    out += [pytest.param(json.dumps({"commands": {"x": v}}), id=f"commands.x={v!r:.8}") for v in SWAPS["str"]]
    return out


@pytest.mark.parametrize("text", _bench_cases())
def test_every_read_field_of_a_bench_results_file_is_checked(scratch, text):
    work = scratch()
    (work / "results.json").write_text(text)
    with pytest.raises(BenchError) as e:
        load_json(work / "results.json")
    assert_names(e, "results.json")


def test_the_report_of_a_section_not_as_bench_writes_it_is_one_line(scratch, capsys):
    work = scratch()
    (work / "results.json").write_text(json.dumps({"train": {"throughput": "x"}}))
    rc = cli.main(["bench", "report", "--json", str(work / "results.json"), "--docs", str(work)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "results.json" in err and "\n" not in err, err


# --- the environment ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["inf", "nan", "abc", "-5", "0", "1e400", "1e300", "10" * 200])
def test_the_collective_timeout_variable_is_checked(text):
    with pytest.raises(UserError, match=f"environment variable {TIMEOUT_ENV}="):
        timeout_seconds({TIMEOUT_ENV: text})
    assert timeout_seconds({TIMEOUT_ENV: "60"}) == 60 and timeout_seconds({}) == 300


def test_the_process_id_limit_matches_the_platform():
    assert PID_MAX >= 2**22 and os.getpid() <= PID_MAX
