"""Train the shipped default model (checkpoints/default.safetensors) with the project's own trainer.

    python tools/train_default.py --out runs/default --steps 15000

Same code path as `python main.py train --data emoji16 --preset quick --steps 15000`; this script
only adds a progress line every 100 steps for a long unattended run.
"""
import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.data import load_builtin  # noqa: E402
from core.threads import configure_threads  # noqa: E402
from core.training import TRAIN_PRESETS, Trainer  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/default")
    ap.add_argument("--steps", type=int, default=15000)
    ap.add_argument("--n-feat", type=int, default=32)
    ap.add_argument("--resume", action="store_true")
    args = ap.parse_args()
    configure_threads()
    ds = load_builtin("emoji16")
    cfg = replace(TRAIN_PRESETS["quick"], steps=args.steps, n_feat=args.n_feat, checkpoint_every=500)
    tr = Trainer.from_run(ds, args.out, steps=args.steps) if args.resume else Trainer(ds, cfg, args.out)
    start = time.time()
    for m in tr.run():
        if m.step % 100 == 0:
            print(f"step {m.step}/{m.total_steps} loss {m.loss:.4f} lr {m.lr:.2e} {m.images_per_s:.0f} img/s "
                  f"elapsed {m.elapsed:.0f}s eta {m.eta:.0f}s", flush=True)
    tr.save()
    print(f"done in {time.time() - start:.0f}s wall", flush=True)


if __name__ == "__main__":
    main()
