"""Build the few-step companions the shipped default model comes with, for a new default model.

    python tools/build_shortcuts.py --model runs/desk_long/model.safetensors --out runs/ship

The shipped default model holds five tuned spacings, and two distilled students ship beside it (docs/fast.md
says what each buys and how they were chosen). A new default model needs all of them made again from its own
weights, in this order, because each step reads the previous one's file:

1. tuned-2 and tuned-3: `tune-steps` (GITS, DPM-Solver++(3M)), the closest 2- and 3-call paths;
2. tuned-5, tuned-4, tuned-6: `tune-steps --method ramp`, the best-looking Karras ramps; the last one writes
   `<out>/default.safetensors`, the model with all five spacings;
3. the 4-call student of that model (`distill --calls 4`; its teacher spacing auto = tuned-6), copied to
   `<out>/default.shortcut4.safetensors`;
4. the 2-call student of the 4-call one (a second round, 2,400 steps), copied to
   `<out>/default.shortcut2.safetensors`.

Every step is a `main.py` command in a process of its own, printed before it runs. The tool is resumable: run
it again after a stop (Ctrl-C saves a distillation) and it skips what is done, resumes a distillation from its
last save and starts the rest. It writes only into --out and never into checkpoints/: it ends by printing the
commands that copy the three files there, to run once the model has been measured.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.catalog import RESUME_FILE  # noqa: E402
from core.checkpoint import CheckpointError, read_metadata  # noqa: E402
from core.paths import file_digest  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PLAN_FILE = "build_shortcuts.json"
STUDENT_FILE = "model.safetensors"
SECOND_ROUND_STEPS = 2400  # the 2-call student of the 4-call one: 1,200 steps gave 1.04, 2,400 gave 0.91
SHIPPED = ("default.safetensors", "default.shortcut4.safetensors", "default.shortcut2.safetensors")


class ToolError(Exception):
    """A user's mistake (a missing model, a folder that is not ours): one line, exit code 2."""


@dataclass(frozen=True)
class Step:
    """One main.py command; done when `output` is there. A distillation's student is copied to `output` once it
    has `distill_steps`."""
    name: str
    args: tuple[str, ...]
    output: str
    run_folder: str = ""          # a distillation's run folder (resumable)
    distill_steps: int = 0


def plan(model: Path, out: Path) -> list[Step]:
    """The steps, in order, for the model file `model`, writing under `out`."""
    tuned = {c: out / f"tuned-{c}.safetensors" for c in (2, 3, 5, 4)}
    model_all = out / SHIPPED[0]
    s4, s2 = out / "shortcut4", out / "shortcut2"

    def tune(calls: int, source: Path, target: Path, *method: str) -> Step:
        return Step(f"tuned-{calls}", ("tune-steps", *method, "--calls", str(calls), "--checkpoint", str(source),
                                       "--out", str(target)), str(target))

    return [
        tune(2, model, tuned[2]),
        tune(3, tuned[2], tuned[3]),
        tune(5, tuned[3], tuned[5], "--method", "ramp"),
        tune(4, tuned[5], tuned[4], "--method", "ramp"),
        tune(6, tuned[4], model_all, "--method", "ramp"),
        Step("4-call student", ("distill", "--checkpoint", str(model_all), "--out", str(s4), "--calls", "4"),
             str(out / SHIPPED[1]), run_folder=str(s4), distill_steps=1200),
        Step("2-call student", ("distill", "--checkpoint", str(out / SHIPPED[1]), "--out", str(s2), "--calls", "2",
                                "--steps", str(SECOND_ROUND_STEPS)),
             str(out / SHIPPED[2]), run_folder=str(s2), distill_steps=SECOND_ROUND_STEPS),
    ]


def student_done(folder: Path, steps: int) -> bool:
    """Whether the run folder's student has finished its `steps` (a stopped run's student has fewer)."""
    try:
        distilled = read_metadata(folder / STUDENT_FILE)["extra"].get("distilled") or {}
    except (CheckpointError, OSError):
        return False
    return distilled.get("distill_steps") == steps


def command(step: Step) -> list[str]:
    """The step's command line, with --resume when its distillation has a save to go on from."""
    args = list(step.args)
    if step.run_folder and (Path(step.run_folder) / RESUME_FILE).is_file():
        # a resumed distillation keeps its saved settings and refuses them again; only the total may be given
        keep = ("--checkpoint", "--out", "--steps")
        args = [args[0]] + [x for k, v in zip(args[1::2], args[2::2]) if k in keep for x in (k, v)] + ["--resume"]
    return [sys.executable, str(ROOT / "main.py"), *args]


def check_plan_file(model: Path, out: Path) -> None:
    """--out belongs to one model: record its digest on the first run, refuse another model's folder after."""
    digest = file_digest(model)
    plan_file = out / PLAN_FILE
    if plan_file.is_file():
        try:
            saved = json.loads(plan_file.read_text()[:4096])["model_sha256"]
        except (OSError, ValueError, KeyError, TypeError):
            raise ToolError(f"{plan_file}: not this tool's record; give another --out") from None
        if saved != digest:
            raise ToolError(f"{out}: built for another model (sha256 {saved[:12]}…, {model} has {digest[:12]}…); "
                             "give another --out")
        return
    if out.exists() and any(out.iterdir()):
        raise ToolError(f"{out}: the folder has files and none of them is this tool's record; give an empty "
                         "or new --out")
    out.mkdir(parents=True, exist_ok=True)
    plan_file.write_text(json.dumps({"model": str(model), "model_sha256": digest}, indent=1))


def is_done(step: Step) -> bool:
    done = Path(step.output).is_file()
    return done and student_done(Path(step.run_folder), step.distill_steps) if step.run_folder else done


def build(model: Path, out: Path, run=subprocess.call) -> int:
    """Run the steps not done yet; 0 when all are, else the failing command's exit code."""
    if not model.is_file():
        raise ToolError(f"{model}: no such model file")
    if out.resolve().is_relative_to((ROOT / "checkpoints").resolve()):
        raise ToolError(f"{out}: inside checkpoints/; build elsewhere and copy the files after measuring them")
    check_plan_file(model, out)
    for step in plan(model, out):
        if is_done(step):
            print(f"[done] {step.name}: {step.output}", flush=True)
            continue
        cmd = command(step)
        print(f"[run] {step.name}: python main.py {' '.join(cmd[2:])}", flush=True)
        rc = run(cmd)
        if rc != 0:
            print(f"{step.name} stopped (exit code {rc}); run this tool again to go on", file=sys.stderr)
            return rc
        if step.run_folder:
            if not student_done(Path(step.run_folder), step.distill_steps):
                print(f"{step.name}: {step.run_folder} has no finished student", file=sys.stderr)
                return 1
            shutil.copyfile(Path(step.run_folder) / STUDENT_FILE, step.output)
    print("\nall built. Measure them (docs/default_model.md, docs/fast.md), then ship with:")
    for name in SHIPPED:
        print(f"cp {out / name} checkpoints/{name}")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, type=Path, help="the new default model (a trained model file)")
    p.add_argument("--out", required=True, type=Path, help="folder for the steps' files (resumable)")
    a = p.parse_args(argv)
    try:
        return build(a.model, a.out)
    except ToolError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("stopped; run this tool again to go on", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
