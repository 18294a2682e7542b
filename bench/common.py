"""Shared helpers for benchmarks: machine description, timed CLI runs, recording rows in BENCHMARKS.md."""

from __future__ import annotations

import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CATALENS_SHARED_DATA", REPO.parent / "shared" / "data"))
FASHION = f"fashion-mnist:{SHARED / 'fashion-mnist'}"


def machine() -> str:
    cpu = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    return f"{os.cpu_count()} cores, {cpu}, torch {torch.__version__}"


def catalens(*args: str) -> float:
    """Run the catalens CLI, streaming its output; returns wall seconds. Fails loudly."""
    executable = Path(sys.executable).parent / "catalens"
    started = time.perf_counter()
    subprocess.run([str(executable), *args], check=True, env={**os.environ, "CATALENS_NO_PROGRESS": "1"})
    return time.perf_counter() - started


def clothing_small_with_test(name: str) -> str:
    """clothing-small laid out as train/ + test/ (its validation/ folder as the test split) in bench/out/NAME, so
    that catalens carves its validation split from train/ and the 341 validation photos stay held out."""
    import shutil

    folder = REPO / "bench" / "out" / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    (folder / "train").symlink_to(SHARED / "clothing-small" / "train")
    (folder / "test").symlink_to(SHARED / "clothing-small" / "validation")
    return str(folder)


def lite0_features(parts: dict) -> dict:
    """The practitioner's probe features: EfficientNet-Lite0 pooled features (resize 256, centre crop 224, mean =
    std = 0.5) of each catalog in `parts` (name -> Catalog), photo only (no mirror view), extracted by catalens's
    own cache code; (features, labels, images/s), each a dict by name."""
    import torch

    from catalens.engine.train import TrainConfig, make_preprocessing
    from catalens.loading.batches import make_batches
    from catalens.models import create_model
    from catalens.models.features import extract_features, feature_function
    from catalens.models.pretrained import load_pretrained

    preprocessing = make_preprocessing(TrainConfig(model="timm:tf_efficientnet_lite0", pretrained=True),
                                       next(iter(parts.values())))
    module = create_model("tf_efficientnet_lite0", 1000)
    load_pretrained(module, "tf_efficientnet_lite0")
    function = feature_function(module, preprocessing, torch.device("cpu"))
    x, y, speed = {}, {}, {}
    for name, part in parts.items():
        started = time.perf_counter()
        features, labels, _ = extract_features(module, make_batches(part, preprocessing, 32), preprocessing.normalize,
                                               torch.device("cpu"), flip=False, description=name, features=function)
        x[name], y[name] = features[0].numpy(), labels.numpy()
        speed[name] = len(labels) / (time.perf_counter() - started)
    return x, y, speed


def publish(rows: list[str], record_them: bool) -> None:
    """Print the result rows, and append them to BENCHMARKS.md when asked (--record)."""
    for row in rows:
        print(row)
    if record_them:
        record(rows)


def record(rows: list[str]) -> None:
    """Append result rows (markdown table rows without the date/machine/command) to BENCHMARKS.md, with the
    command that ran this script."""
    command = f"python bench/{Path(sys.argv[0]).name} {shlex.join(sys.argv[1:])}".strip()
    path = REPO / "BENCHMARKS.md"
    today = date.today().isoformat()
    with path.open("a") as handle:
        for row in rows:
            handle.write(f"| {today} | {machine()} | `{command}` | {row} |\n")
    print(f"recorded {len(rows)} row(s) in {path}")


# Choices on validation, the test split scored once. A bench picks its configuration with choose() on validation
# (or cross-validation on train) and then calls final() once per data set: a second final() for the same bench
# and data in one process is refused, so a test score can never become a choice. Rows say which they are.
_FINAL_SCORED: dict[tuple[str, str], str] = {}


def choose(scores: dict[str, float], what: str = "validation accuracy") -> str:
    """The configuration with the best validation score (the first among equals), after printing them all."""
    if not scores:
        raise ValueError("choose() needs at least one scored configuration")
    best = max(scores, key=lambda name: scores[name])
    for name, score in scores.items():
        print(f"  {what} {score:.4f}  {name}{'   <- chosen' if name == best else ''}")
    return best


def final(bench: str, data: str, configuration: str, score):
    """Score the test split once: `score()` runs for the first (bench, data) only; a second call raises."""
    key = (bench, data)
    if key in _FINAL_SCORED:
        raise RuntimeError(f"{bench} has already scored the test split of {data} (for {_FINAL_SCORED[key]}); scoring "
                           f"{configuration} on it too would make the test split a choice: choose on validation")
    _FINAL_SCORED[key] = configuration
    return score()


def final_row(text: str, chosen_on: str = "validation") -> str:
    """A BENCHMARKS.md row of a test score made once, for a configuration chosen elsewhere."""
    return f"**final** (chosen on {chosen_on}; test split scored once): {text}"


def validation_row(text: str, why: str = "no separate test split; choices made on it would inflate it") -> str:
    """A BENCHMARKS.md row whose number is a validation number (a screen, or a bench with no test split)."""
    return f"validation number ({why}): {text}"


def timings(function, seconds: float = 5.0) -> list[float]:
    """Seconds of each call of `function` over about `seconds` (at least 5 calls), after one warm-up call."""
    function()
    times, started = [], time.perf_counter()
    while time.perf_counter() - started < seconds or len(times) < 5:
        begun = time.perf_counter()
        function()
        times.append(time.perf_counter() - begun)
    return times


def copy_photos(source: Path, folder: Path, count: int) -> Path:
    """The first `count` JPEGs under `source` (sorted), copied into `folder` in their class subfolders, once."""
    if not folder.exists():
        for path in sorted(source.rglob("*.jpg"))[:count]:
            target = folder / path.parent.name / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target)
    return folder
