"""Validation that near-identical shots cannot fool (issue 25): the validation and cross-validated estimates of a
split carved photo by photo against one that keeps near-identical photos together, beside the test score.

clothing-small: train/ is train (validation carved from it, 11 %), validation/ (341 real photos) is the test
split, the same in both modes. The Lite0 linear head (`--model tf_efficientnet_lite0 --pretrained --freeze
backbone`) is trained twice: with the default grouping, and with `--group-by photo`. Each run's test split is
scored once (bench/common.final, one per mode); nothing is chosen here. Also: how common near-identical photos are
in ../shared/data's real catalogs (a photo with another within 6 bits of perceptual hash).

    python bench/grouped_validation.py --record
"""

from __future__ import annotations

import argparse
import json
import shutil

import numpy as np
from common import REPO, SHARED, catalens, final, publish

OUT = REPO / "bench" / "out"
MODEL = ["--model", "tf_efficientnet_lite0", "--pretrained", "--freeze", "backbone"]


def clothing_data() -> str:
    folder = OUT / "grouped-clothing-data"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    (folder / "train").symlink_to(SHARED / "clothing-small" / "train")
    (folder / "test").symlink_to(SHARED / "clothing-small" / "validation")
    return str(folder)


def run_mode(data: str, mode: str) -> dict:
    run = OUT / f"grouped-{mode}"
    shutil.rmtree(run, ignore_errors=True)
    extra = ["--group-by", "photo"] if mode == "photo" else []
    catalens("train", "--data", data, *MODEL, *extra, "--out", str(run))
    card = json.loads((run / "model_card.json").read_text())
    final("grouped_validation", f"clothing-small ({mode})", mode,
          lambda: catalens("evaluate", str(run), "--data", data, "--split", "test", "--out", str(run / "eval"),
                           "--no-leakage-check"))
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    head = card["training"]["head"]
    return {"mode": mode, "val": card["validation"]["accuracy"], "cv": max(head["cv_accuracy"].values()),
            "test": metrics["accuracy"], "how": card["validation_data"]["how"], "val_items": card["data"]["val_items"]}


def near_identical_share(folder) -> tuple[int, int]:
    """(photos with another photo within 6 bits of pHash or byte-identical, photos) in an image folder tree."""
    from catalens.data.catalog import Catalog
    from catalens.data.dedupe import clusters_of, near_pairs
    from catalens.data.leakage import image_keys
    from catalens.data.sources.folder import FileReader
    from catalens.data.splits import GROUP_DISTANCE

    paths = sorted(str(p) for p in folder.rglob("*.jpg"))
    catalog = Catalog.from_records({"ref": paths}, classes=[], reader=FileReader("/"), source=str(folder))
    exact, hashes, valid = image_keys(catalog)
    rows = np.flatnonzero(valid)
    pairs = near_pairs(hashes[rows], GROUP_DISTANCE)
    pairs = rows[pairs] if len(pairs) else np.zeros((0, 2), np.int64)
    first: dict = {}
    same = [(first.setdefault(key, i), i) for i, key in enumerate(exact) if key]
    same = np.array([pair for pair in same if pair[0] != pair[1]], np.int64).reshape(-1, 2)
    if not paths:
        raise SystemExit(f"no .jpg photos under {folder}")
    sizes = np.bincount(clusters_of(np.r_[pairs, same], len(paths)))
    return int(sizes[sizes > 1].sum()), len(paths)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--record", action="store_true", help="append the rows to BENCHMARKS.md")
    args = parser.parse_args()
    data = clothing_data()
    rows = []
    for mode in ("grouped", "photo"):
        r = run_mode(data, mode)
        carved = "by near-identical groups" if mode == "grouped" else "photo by photo (--group-by photo)"
        rows.append(f"clothing-small, Lite0 head, validation carved {carved}: validation accuracy {r['val']:.4f} "
                    f"({r['val_items']} photos), cross-validated {r['cv']:.4f}, **test {r['test']:.4f}** (341 "
                    f"photos, scored once per mode); split: {r['how']}")
    for name, folder in (("clothing-small", SHARED / "clothing-small"),
                         ("fashion-products", SHARED / "fashion-products" / "images")):
        near, total = near_identical_share(folder)
        rows.append(f"{name}: {near:,} of {total:,} photos ({near / total:.1%}) have a byte-identical or "
                    "near-identical photo (perceptual hash within 6 bits) in the same folder tree")
    publish(rows, args.record)


if __name__ == "__main__":
    main()
