"""A run's loss.csv: the header, appending rows, cutting rows a resumed run will write again, reading it back."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

LOG_HEADER = ["step", "loss", "lr", "images_per_s", "loss_low_noise", "loss_mid_noise", "loss_high_noise"]


def append_log(path: Path, rows: list[list]) -> None:
    """Append `rows` to loss.csv, writing the header first when the file is new."""
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists()
    with path.open("a", newline="") as f:
        w = csv.writer(f)
        if new:
            w.writerow(LOG_HEADER)
        w.writerows(rows)


def truncate_log(path: Path, step: int) -> None:
    """Drop log rows after `step` so a resumed run does not write them twice."""
    if not path.exists():
        return
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    kept = rows[:1] + [r for r in rows[1:] if r and int(r[0]) <= step]
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(kept)


def read_loss_log(path: str | Path) -> dict[str, np.ndarray]:
    """Columns of a run's loss.csv as float arrays (for resuming a plot)."""
    with Path(path).open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return {}
    header, body = rows[0], [r for r in rows[1:] if r]
    data = np.array(body, dtype=np.float64).reshape(len(body), len(header))
    return {h: data[:, i] for i, h in enumerate(header)}
