"""The zoomed-vs-normal filter and `catalens sort` (issues 4 and 14), through the documented route.

1. Bootstraps the training set (`catalens zoomed bootstrap --from ... --from ...`) from clothing-small train/
   (products on tables and floors) and the first 1,500 photos of fashion-products (models and products in a
   studio), and held-out sets from clothing-small validation/ (photos never used in training): balanced (1 crop per
   photo) and catalog-like (1 zoomed : 6 normal). These scores are on BOOTSTRAPPED data: the zoomed images are
   generated crops.
2. Trains the filter with each recipe (`auto`: `catalens train --data DATASET --out RUN`, no model flags) and
   reports precision / recall / F1 of the zoomed class on the held-out sets.
3. REAL normals: sorts 1,000 fashion-products photos that the bootstrap never saw (ids after the first 1,500;
   many a model wearing the garment on a studio background, the photos that went to `zoomed` in issue 14) and
   341 clothing-small validation photos, and reports the share sorted as zoomed. No real close-up photographs
   could be obtained here, so the real set has no zoomed class: it measures false alarms only.
3. Sorts a folder of the real ~400x533 JPEGs (copy mode, decode + resize + predict at 224 px + copy) with the
   onnxruntime backend, and the PyTorch backend as the baseline in the same run. Target: >= 150 images/s on 2 cores.

Issue 27, the geometry: the filter must see the whole photo. `auto` trains with the geometry the bootstrap records
(`pad`); `auto-crop` is today's centre-crop filter (the baseline, same run) and `auto-squash` the other whole-photo
geometry. The real normal photos are also cut to 3:4 and to a 0.4-wide portrait by cropping their sides (centred:
the product stays whole when it is centred; a sample was checked by eye, BENCHMARKS.md), and the share sorted as
zoomed is reported at every aspect ratio. Target: <= 1 % at each.

    python bench/zoomed.py --recipes auto auto-crop auto-squash --record
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from common import SHARED, catalens, copy_photos, record

from catalens.apps.sort import sort_folder
from catalens.rundir.run import Model

CLOTHING = SHARED / "clothing-small"
PRODUCTS = SHARED / "fashion-products" / "images"
STUDIO_TRAIN, STUDIO_HELD_OUT = 1500, 1000
ASPECTS = {"native": None, "3:4": 0.75, "0.4": 0.4}  # real normals, also cut to these by cropping their sides


def cut_sides(source: Path, target: Path, aspect: float | None) -> None:
    """A copy of the photo, its sides cropped (centred) to width / height = aspect when it is wider than that."""
    from PIL import Image

    target.parent.mkdir(parents=True, exist_ok=True)
    if aspect is None:
        shutil.copy(source, target)
        return
    with Image.open(source) as image:
        image = image.convert("RGB")
        width = min(image.width, round(aspect * image.height))
        left = (image.width - width) // 2
        image.crop((left, 0, left + width, image.height)).save(target, quality=95)
RECIPES = {
    "auto": [],
    "auto-crop": ["--resize", "crop"],
    "auto-squash": ["--resize", "squash"],
    "photocnn": ["--model", "photocnn", "--epochs", "12", "--batch-size", "64", "--class-weights"],
    "lite0-head": ["--model", "tf_efficientnet_lite0", "--pretrained", "--freeze", "backbone", "--input-size", "224",
                   "--epochs", "30", "--optimizer", "adamw", "--lr", "3e-3", "--batch-size", "64",
                   "--weight-decay", "1e-4", "--class-weights"],
}


def zoomed_scores(run: Path, data: Path, out: Path) -> dict:
    catalens("evaluate", str(run), "--data", str(data), "--split", "val", "--out", str(out))
    metrics = json.loads((out / "metrics.json").read_text())
    zoomed = metrics["per_class"]["zoomed"]
    return {key: zoomed[key] for key in ("precision", "recall", "f1")} | {"accuracy": metrics["accuracy"]}


def sort_speed(run: Path, photos: Path, backend: str, work: Path) -> float:
    model = Model.load(run, backend=backend)
    out = work / f"sorted-{run.name}-{backend}"
    shutil.rmtree(out, ignore_errors=True)
    summary = sort_folder(model, photos, out, show_progress=False)
    return summary.images_per_s


def zoomed_share(run: Path, photos: Path, work: Path) -> tuple[int, int]:
    """(photos sorted as zoomed, photos) for a folder of real normal photos."""
    out = work / f"real-{run.name}-{photos.name}"
    shutil.rmtree(out, ignore_errors=True)
    summary = sort_folder(Model.load(run), photos, out, show_progress=False)
    return summary.placed.get("zoomed", 0), summary.predicted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", nargs="+", default=["auto"], choices=list(RECIPES))
    parser.add_argument("--work", type=Path, default=None, help="Folder for datasets and runs [default: a temp one].")
    parser.add_argument("--sort-images", type=int, default=1000)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="catalens-zoomed-"))
    train, held_out, catalog_like = work / "zoomed-train", work / "zoomed-heldout", work / "zoomed-heldout-1to6"
    studio = sorted(PRODUCTS.glob("*.jpg"), key=lambda path: int(path.stem) if path.stem.isdigit() else 0)
    studio_train, real_normals = work / "studio-train", work / "real-normals"
    if not studio_train.exists():
        for folder, paths in ((studio_train, studio[:STUDIO_TRAIN]),
                              (real_normals / "studio", studio[STUDIO_TRAIN:STUDIO_TRAIN + STUDIO_HELD_OUT]),
                              (real_normals / "clothing", sorted((CLOTHING / "validation").rglob("*.jpg")))):
            folder.mkdir(parents=True, exist_ok=True)
            for path in paths:
                shutil.copy(path, folder / f"{path.parent.name}_{path.name}")
    for kind in ("studio", "clothing"):
        for aspect_name, aspect in ASPECTS.items():
            folder = real_normals / f"{kind}-{aspect_name}"
            if not folder.exists():
                for path in sorted((real_normals / kind).iterdir()):
                    cut_sides(path, folder / path.name, aspect)
    if not train.exists():
        catalens("zoomed", "bootstrap", "--from", str(CLOTHING / "train"), "--from", str(studio_train),
                 "--out", str(train), "--val-fraction", "0.15")
        catalens("zoomed", "bootstrap", "--from", str(CLOTHING / "validation"), "--out", str(held_out),
                 "--val-fraction", "1", "--seed", "1")
        catalens("zoomed", "bootstrap", "--from", str(CLOTHING / "validation"), "--out", str(catalog_like),
                 "--val-fraction", "1", "--seed", "1", "--crops-per-photo", "0.17")
    photos = copy_photos(CLOTHING / "train", work / "photos", args.sort_images)
    rows = []
    for name in args.recipes:
        run = work / "runs" / name
        if not (run / "model.safetensors").exists():
            started = time.perf_counter()
            catalens("train", "--data", str(train), *RECIPES[name], "--out", str(run))
            trained = f"train {time.perf_counter() - started:.0f} s"
        else:
            trained = "run reused"
        balanced = zoomed_scores(run, held_out, run / "heldout")
        skewed = zoomed_scores(run, catalog_like, run / "heldout-1to6")
        false_alarms = {f"{kind}-{aspect}": zoomed_share(run, real_normals / f"{kind}-{aspect}", work)
                        for kind in ("studio", "clothing") for aspect in ASPECTS}
        geometry = json.loads((run / "model_card.json").read_text())["preprocessing"]["resize"]
        onnx = sort_speed(run, photos, "onnx", work)
        torch_speed = sort_speed(run, photos, "torch", work)
        labels = {"studio": "fashion-products studio", "clothing": "clothing-small validation"}
        alarms = "; ".join(f"{label}: " + ", ".join(
            f"{aspect} **{false_alarms[f'{kind}-{aspect}'][0]}**/{false_alarms[f'{kind}-{aspect}'][1]}"
            for aspect in ASPECTS) for kind, label in labels.items())
        result = (f"{name} (resize {geometry}; {trained}): zoomed P/R/F1 {balanced['precision']:.4f}/"
                  f"{balanced['recall']:.4f}/"
                  f"**{balanced['f1']:.4f}** (1:1 held-out), {skewed['precision']:.4f}/{skewed['recall']:.4f}/"
                  f"{skewed['f1']:.4f} (1:6) [bootstrapped]; REAL normal photos sorted as zoomed, by aspect ratio: "
                  f"{alarms}; "
                  f"sort {args.sort_images} photos: **{onnx:.0f} img/s** onnxruntime vs "
                  f"{torch_speed:.0f} img/s PyTorch")
        print(result)
        rows.append(result)
    if args.record:
        record(rows)


if __name__ == "__main__":
    main()
