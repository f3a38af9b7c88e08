"""Train the evaluation classifier behind feature-FID and label accuracy (core/metrics.py).

    python tools/train_classifier.py                      # -> resources/classifier_emoji16.safetensors

A small CNN on the built-in emoji16 set's 6 labels, from a fixed seed, with a stratified, seeded
held-out split (15% of every label) that it never trains on. The held-out accuracy, per-label
accuracy and confusion matrix are stored in the file's metadata and printed. A few minutes on a
2-core CPU.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.data import load_builtin  # noqa: E402
from core.metrics import CLASSIFIER_FILE, Classifier, ClassifierConfig, save_classifier  # noqa: E402
from core.paths import resource_path  # noqa: E402


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, held_out): round(fraction * count) of every label held out, chosen by seed."""
    rng = np.random.default_rng(seed)
    y = labels.argmax(axis=1)
    held = []
    for k in range(labels.shape[1]):
        idx = np.flatnonzero(y == k)
        held.append(rng.permutation(idx)[: int(round(fraction * len(idx)))])
    held = np.sort(np.concatenate(held))
    train = np.setdiff1d(np.arange(len(y)), held)
    return train, held


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random horizontal flip and a shift of up to 1 pixel, padding with the white background."""
    b = x.shape[0]
    flip = torch.rand(b, generator=g) < 0.5
    x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
    padded = F.pad(x, (1, 1, 1, 1), value=1.0)  # 1.0 = white in [-1, 1]
    dx, dy = torch.randint(0, 3, (2,), generator=g).tolist()  # one shift per batch: cheap, enough
    h = x.shape[2]
    return padded[:, :, dy:dy + h, dx:dx + h]


@torch.no_grad()
def evaluate(clf: Classifier, x: torch.Tensor, y: torch.Tensor) -> tuple[float, np.ndarray]:
    clf.eval()
    pred = torch.cat([clf.logits(x[i:i + 512]).argmax(1) for i in range(0, len(x), 512)])
    n = int(y.max()) + 1
    conf = np.zeros((n, n), dtype=np.int64)
    np.add.at(conf, (y.numpy(), pred.numpy()), 1)
    return float((pred == y).float().mean()), conf


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(resource_path(CLASSIFIER_FILE)))
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--held-out", type=float, default=0.15)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    ds = load_builtin("emoji16")
    train_idx, test_idx = stratified_split(ds.labels, args.held_out, args.seed)
    x_all = ds.to_tensor()  # (N, 3, 16, 16) in [-1, 1]
    y_all = torch.as_tensor(ds.labels.argmax(axis=1), dtype=torch.long)
    x_tr, y_tr, x_te, y_te = x_all[train_idx], y_all[train_idx], x_all[test_idx], y_all[test_idx]

    clf = Classifier(ClassifierConfig(n_classes=ds.n_labels, image_size=ds.size))
    opt = torch.optim.AdamW(clf.parameters(), lr=args.lr, weight_decay=1e-4)
    g = torch.Generator().manual_seed(args.seed)
    steps_per_epoch = math.ceil(len(x_tr) / args.batch)
    total = args.epochs * steps_per_epoch
    start, step = time.time(), 0
    for ep in range(args.epochs):
        clf.train()
        perm = torch.randperm(len(x_tr), generator=g)
        for i in range(0, len(x_tr), args.batch):
            idx = perm[i:i + args.batch]
            for group in opt.param_groups:  # cosine decay to zero
                group["lr"] = args.lr * 0.5 * (1 + math.cos(math.pi * step / total))
            # label smoothing keeps the features from collapsing onto a few over-confident directions
            loss = F.cross_entropy(clf.logits(augment(x_tr[idx], g)), y_tr[idx], label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
        if (ep + 1) % 5 == 0 or ep + 1 == args.epochs:
            acc, _ = evaluate(clf, x_te, y_te)
            print(f"epoch {ep + 1}/{args.epochs} loss {loss.item():.3f} held-out acc {acc:.3f} "
                  f"({time.time() - start:.0f}s)", flush=True)

    acc, conf = evaluate(clf, x_te, y_te)
    train_acc, _ = evaluate(clf, x_tr, y_tr)
    per_label = {name: float(conf[k, k] / max(conf[k].sum(), 1)) for k, name in enumerate(ds.label_names)}
    clf.meta = {
        "label_names": ds.label_names, "image_size": ds.size, "dataset": ds.name,
        "dataset_fingerprint": ds.fingerprint(), "held_out_accuracy": acc, "train_accuracy": train_acc,
        "per_label_held_out_accuracy": per_label, "confusion_held_out": conf.tolist(),
        "n_train": int(len(train_idx)), "n_held_out": int(len(test_idx)), "held_out_fraction": args.held_out,
        "split": "stratified per label, numpy default_rng(seed)", "seed": args.seed, "epochs": args.epochs,
        "trained_by": "tools/train_classifier.py",
    }
    out = save_classifier(args.out, clf.eval())
    print(f"held-out accuracy {acc:.3f} on {len(test_idx)} images (train {train_acc:.3f}); per label:")
    for name, a in per_label.items():
        print(f"  {name:16s} {a:.3f}")
    print(f"confusion (rows = true, cols = predicted): {conf.tolist()}")
    print(f"wrote {out} in {time.time() - start:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
