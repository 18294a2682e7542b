"""Issue 15: evaluate counts evaluation images that copy training images (exact bytes, or near duplicates by
perceptual hash) on real photos, warns, and shows them in report.md."""

from __future__ import annotations

import json
import shutil

from conftest import run_cli, shared
from PIL import Image

CLASSES = ("hat", "shoes", "skirt")


def test_evaluate_counts_copies_and_near_copies_of_training_images(tmp_path):
    photos = shared("clothing-small")
    train = tmp_path / "shop"
    test = tmp_path / "new-photos"
    for name in CLASSES:
        for index, path in enumerate(sorted((photos / "train" / name).glob("*.jpg"))[:12]):
            (train / name).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, train / name / path.name)
            if index < 2:  # the same file under another name: byte-identical
                (test / name).mkdir(parents=True, exist_ok=True)
                shutil.copy(path, test / name / f"copy-{path.name}")
            elif index == 2:  # resized and re-encoded: a near duplicate
                image = Image.open(path).convert("RGB")
                image.resize((image.width * 3 // 4, image.height * 3 // 4)).save(test / name / f"small-{path.stem}.jpg",
                                                                                  quality=80)
        for path in sorted((photos / "validation" / name).glob("*.jpg"))[:5]:  # new photos
            shutil.copy(path, test / name / path.name)
    result = run_cli("train", "--data", str(train), "--model", "cnn3", "--epochs", "1", "--input-size", "32",
                     "--workers", "0", "--out", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    result = run_cli("evaluate", str(tmp_path / "run"), "--data", str(test), "--out", str(tmp_path / "eval"))
    assert result.returncode == 0, result.stderr
    overlap = json.loads((tmp_path / "eval" / "metrics.json").read_text())["leakage"]
    training_split = overlap["training_images"]
    assert overlap["checked"] and overlap["evaluated_images"] == 3 * 8 and 0 < training_split <= 36
    # copies of photos that fell into the training run's own validation/test splits are not training images
    # the seeded split put 2 of the 6 copied originals in training; near counts the 3 re-encoded photos whose
    # closest training photo is within the distance (an original, or a look-alike of it)
    assert (overlap["exact"], overlap["near"]) == (2, 3), {k: overlap[k] for k in ("exact", "near", "training_images")}
    assert all(e["kind"] == "exact" and e["evaluated"].split("/")[-1].startswith("copy-")
               for e in overlap["examples"][:overlap["exact"]])
    assert "byte-identical" in result.stderr and "optimistic" in result.stderr
    report = (tmp_path / "eval" / "report.md").read_text()
    assert "## Overlap with the training images" in report and "copy-" in report
    quiet = run_cli("evaluate", str(tmp_path / "run"), "--data", str(test), "--out", str(tmp_path / "eval2"),
                    "--no-leakage-check")
    assert quiet.returncode == 0 and "leakage" not in json.loads((tmp_path / "eval2" / "metrics.json").read_text())
