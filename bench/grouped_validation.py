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
from common import REPO, SHARED, catalens, clothing_small_with_test, final, publish

OUT = REPO / "bench" / "out"
MODEL = ["--model", "tf_efficientnet_lite0", "--pretrained", "--freeze", "backbone"]


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
    from catalens.data.identity import clusters_of, identify, identity_pairs
    from catalens.data.sources.folder import FileReader
    from catalens.data.splits import GROUP_DISTANCE

    paths = sorted(str(p) for p in folder.rglob("*.jpg"))
    if not paths:
        raise SystemExit(f"no .jpg photos under {folder}")
    catalog = Catalog.from_records({"ref": paths}, classes=[], reader=FileReader("/"), source=str(folder))
    identities = identify(catalog)
    pairs, _ = identity_pairs(identities.exact, identities.phash, identities.searchable, GROUP_DISTANCE)
    sizes = np.bincount(clusters_of(pairs, len(paths)))
    return int(sizes[sizes > 1].sum()), len(paths)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--record", action="store_true", help="append the rows to BENCHMARKS.md")
    args = parser.parse_args()
    data = clothing_small_with_test("grouped-clothing-data")
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
