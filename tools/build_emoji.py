"""Build the built-in emoji data sets (resources/emoji16.npz, resources/emoji32.npz).

Source: the npm packages emoji-datasource-google and emoji-datasource-twitter, version 16.0.0
(iamcal/emoji-data, MIT; images: Noto Emoji, Apache-2.0, and Twemoji, CC-BY-4.0).

    python tools/build_emoji.py --fetch            # npm pack + extract into tools/_npm, then build
    python tools/build_emoji.py --src tools/_npm   # build from packages extracted before

Each set keeps every base emoji (skin-tone variants are ignored, category "Component" is
excluded) that the vendor drew itself (`has_img_<set>`), cut from the vendor's sprite sheet,
composited on white and labelled with its category merged into six labels. The output is
byte-for-byte reproducible: rows are sorted and the zip entries carry a fixed timestamp.
"""
from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

VERSION = "16.0.0"
STYLES = ("google", "twitter")  # style index 0 = google (Noto), 1 = twitter (Twemoji)
SIZES = (16, 32)
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SCRATCH = REPO_ROOT / "tools" / "_npm"

# Merged labels, in this order; values are the emoji-datasource `category` names.
LABELS = {
    "face": ("Smileys & Emotion",),
    "person": ("People & Body",),
    "animal & nature": ("Animals & Nature",),
    "food": ("Food & Drink",),
    "object": ("Activities", "Travel & Places", "Objects"),
    "symbol & flag": ("Symbols", "Flags"),
}
EXCLUDED_CATEGORIES = {"Component"}  # bare skin-tone swatches and hair components


def package_name(style: str) -> str:
    return f"emoji-datasource-{style}"


def fetch(scratch: Path) -> Path:
    """`npm pack` both packages into `scratch` and extract what the build needs."""
    scratch.mkdir(parents=True, exist_ok=True)
    for style in STYLES:
        spec = f"{package_name(style)}@{VERSION}"
        tgz = scratch / f"{package_name(style)}-{VERSION}.tgz"
        if not tgz.is_file():
            subprocess.run(["npm", "pack", spec], cwd=scratch, check=True)
        extract(tgz, scratch / package_name(style), style)
    return scratch


def extract(tgz: Path, dest: Path, style: str) -> None:
    """Extract only emoji.json, package.json, LICENSE and the 16/32 px sheets (no path tricks)."""
    wanted = {"package/emoji.json", "package/package.json", "package/LICENSE"}
    wanted |= {f"package/img/{style}/sheets/{size}.png" for size in SIZES}
    with tarfile.open(tgz, "r:gz") as tar:
        for member in tar.getmembers():
            if member.name in wanted and member.isfile():
                target = dest / member.name.removeprefix("package/")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(tar.extractfile(member).read())


def find_package(src: Path, style: str) -> Path:
    """The folder holding emoji.json for `style`, for the layouts npm pack/install produce."""
    name = package_name(style)
    for candidate in (src / name, src / name / "package", src / style / "package",
                      src / "node_modules" / name, src / style):
        if (candidate / "emoji.json").is_file():
            return candidate
    raise SystemExit(f"{src}: no extracted {name} package found (run with --fetch)")


def check_version(package: Path) -> None:
    """Refuse other versions: the shipped files must be rebuildable bit for bit."""
    meta = json.loads((package / "package.json").read_text(encoding="utf-8"))
    if meta.get("version") != VERSION:
        raise SystemExit(f"{package}: version {meta.get('version')}, expected {VERSION}")


def label_index(category: str) -> int:
    for i, categories in enumerate(LABELS.values()):
        if category in categories:
            return i
    raise SystemExit(f"unknown emoji category {category!r}: update LABELS in {Path(__file__).name}")


def base_emoji(package: Path, style: str) -> list[dict]:
    """Base emoji the vendor drew, sorted by Unicode's sort order (skin variants not visited)."""
    entries = json.loads((package / "emoji.json").read_text(encoding="utf-8"))
    kept = [e for e in entries
            if e["category"] not in EXCLUDED_CATEGORIES and e.get(f"has_img_{style}")]
    return sorted(kept, key=lambda e: (e["sort_order"], e["short_name"]))


def cut_cell(sheet: np.ndarray, sheet_x: int, sheet_y: int, size: int) -> np.ndarray:
    """One emoji as (size, size, 3) uint8 on white; cells have a 1 px transparent gutter."""
    x, y = sheet_x * (size + 2) + 1, sheet_y * (size + 2) + 1
    rgba = sheet[y:y + size, x:x + size].astype(np.float32)
    alpha = rgba[..., 3:4] / 255.0
    rgb = rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def build_set(packages: dict[str, Path], size: int) -> dict[str, np.ndarray]:
    """All emoji of both styles at `size` px, as the arrays stored in the npz."""
    images, labels, styles, names = [], [], [], []
    for style_id, style in enumerate(STYLES):
        sheet_file = packages[style] / "img" / style / "sheets" / f"{size}.png"
        sheet = np.asarray(Image.open(sheet_file).convert("RGBA"))
        for e in base_emoji(packages[style], style):
            images.append(cut_cell(sheet, e["sheet_x"], e["sheet_y"], size))
            labels.append(label_index(e["category"]))
            styles.append(style_id)
            names.append(e["short_name"])
    return {
        "images": np.stack(images),                                         # (N, H, W, 3)
        "labels": np.eye(len(LABELS), dtype=np.float32)[labels],            # (N, 6) one-hot
        "label_names": np.array(list(LABELS), dtype=np.str_),
        "style": np.array(styles, dtype=np.uint8),
        "names": np.array(names, dtype=np.str_),
    }


def write_npz(arrays: dict[str, np.ndarray], path: Path) -> None:
    """Like np.savez_compressed, but with fixed zip timestamps so rebuilds are byte-identical."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for key, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, buffer.getvalue(), compresslevel=9)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=DEFAULT_SCRATCH,
                        help="folder with the extracted packages (default: tools/_npm)")
    parser.add_argument("--fetch", action="store_true",
                        help=f"run `npm pack` for version {VERSION} into --src first")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "resources")
    args = parser.parse_args(argv)
    if args.fetch:
        fetch(args.src)
    packages = {style: find_package(args.src, style) for style in STYLES}
    for package in packages.values():
        check_version(package)
    args.out.mkdir(parents=True, exist_ok=True)
    for size in SIZES:
        arrays = build_set(packages, size)
        path = args.out / f"emoji{size}.npz"
        write_npz(arrays, path)
        counts = arrays["labels"].sum(axis=0).astype(int)
        summary = ", ".join(f"{n}={c}" for n, c in zip(LABELS, counts))
        print(f"{path}: {len(arrays['images'])} images, {path.stat().st_size} bytes ({summary})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
