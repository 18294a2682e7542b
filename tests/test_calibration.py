"""Calibrated probabilities (issue 25): temperature scaling fitted after training and kept in the card, ECE and the
risk-coverage curve against hand-computed examples, `--target-accuracy` on sort and predict, and the bench
harness that scores a test split once."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_folder, run_cli
from PIL import Image

from catalens import CatalensError
from catalens.apps.sort import MANIFEST, sort_folder
from catalens.loading.preprocess import softmax_numpy
from catalens.models.calibration import (
    apply_top_label_map,
    choose_top_label_map,
    confidence_and_correct,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    risk_coverage,
    threshold_for,
)
from catalens.rundir.layout import CARD_FILE
from catalens.rundir.run import Model

BENCH = str(Path(__file__).resolve().parents[1] / "bench")


def test_temperature_recovers_overconfident_logits_and_lowers_nll():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 1.5, (4000, 5))
    labels = np.array([rng.choice(5, p=row) for row in softmax_numpy(true_logits)])  # calibrated by construction
    overconfident = 3.0 * true_logits
    temperature = fit_temperature(overconfident, labels)
    assert 2.7 < temperature < 3.3
    assert negative_log_likelihood(overconfident, labels, temperature) < negative_log_likelihood(overconfident, labels)
    # a validation row of a class the head never predicts (absent from train: bias -1e4) does not drag T away
    absent = np.c_[overconfident, np.full(len(labels), -1e4)]
    absent_labels = labels.copy()
    absent_labels[0] = 5
    assert fit_temperature(absent, absent_labels) == pytest.approx(temperature, rel=0.02)


def test_top_label_map_is_chosen_out_of_fold_only_when_it_helps():
    rng = np.random.default_rng(2)
    logits = rng.normal(0, 2.0, (3000, 4))
    labels = np.array([rng.choice(4, p=row) for row in softmax_numpy(logits)])
    # calibrated already, and few rows (an isotonic map overfits them): temperature alone wins out of fold
    mapping, scores = choose_top_label_map(softmax_numpy(logits[:300]), labels[:300], logits=logits[:300])
    assert mapping is None and set(scores) == {"temperature", "temperature + top-label isotonic"}
    # the top class is right far less often than any temperature can say (a label-noise-like shape)
    noisy = np.where(rng.random(3000) < 0.3, rng.integers(0, 4, 3000), logits.argmax(1))
    scaled = softmax_numpy(logits * 3)
    mapping, scores = choose_top_label_map(scaled, noisy)
    assert mapping is not None
    assert scores["temperature + top-label isotonic"] < scores["temperature"]
    mapped = apply_top_label_map(scaled, mapping)
    assert np.allclose(mapped.sum(1), 1) and (mapped.argmax(1) == scaled.argmax(1)).all()
    assert expected_calibration_error(*confidence_and_correct(mapped, noisy)) < \
        expected_calibration_error(*confidence_and_correct(scaled, noisy))


def test_ece_and_risk_coverage_by_hand():
    confidence = np.array([0.9, 0.8, 0.8, 0.6, 0.3, 0.95])
    correct = np.array([1, 1, 0, 1, 0, 1], bool)
    # 3 equal-mass bins, by increasing confidence: (0.3, 0.6) acc 0.5, (0.8, 0.8) acc 0.5, (0.9, 0.95) acc 1
    expected = (2 / 6) * abs(0.5 - 0.45) + (2 / 6) * abs(0.5 - 0.8) + (2 / 6) * abs(1.0 - 0.925)
    assert expected_calibration_error(confidence, correct, bins=3) == pytest.approx(expected)
    curve = risk_coverage(confidence, correct)
    # thresholds 0.95, 0.9, 0.8 (a tie: both or neither), 0.6, 0.3
    assert curve["threshold"] == [0.95, 0.9, 0.8, 0.6, 0.3]
    assert curve["coverage"] == pytest.approx([1 / 6, 2 / 6, 4 / 6, 5 / 6, 1.0])
    assert curve["accuracy"] == pytest.approx([1.0, 1.0, 0.75, 0.8, 4 / 6])
    assert threshold_for(curve, 0.8) == {"threshold": 0.6, "coverage": pytest.approx(5 / 6), "accuracy": 0.8}
    assert threshold_for(curve, 0.99)["threshold"] == 0.9
    assert threshold_for({"threshold": [0.5], "coverage": [1.0], "accuracy": [0.7]}, 0.9) is None


def test_training_fits_a_temperature_that_is_stored_and_applied(small_model_dir):
    card = json.loads((small_model_dir / CARD_FILE).read_text())
    calibration = card["calibration"]
    assert calibration["status"] == "calibrated" and calibration["items"] > 0
    assert calibration["nll"] <= calibration["nll_uncalibrated"]
    assert calibration["temperature"] != 1.0
    assert calibration["top_label_map"] is None  # under 50 validation items: temperature alone
    model = Model.load(small_model_dir, backend="torch")
    assert model.temperature == pytest.approx(calibration["temperature"])
    images = torch.randint(0, 255, (4, 3, 32, 32), dtype=torch.uint8)
    expected = torch.softmax(model.logits(images) / calibration["temperature"], 1).numpy()
    assert np.allclose(model.probabilities(images), expected, atol=1e-5)


def calibrated_copy(small_model_dir: Path, tmp_path: Path, threshold: float) -> Path:
    """The small run with a validation curve on which 98 % accuracy is reached down to `threshold`."""
    run = tmp_path / "run"
    shutil.copytree(small_model_dir, run)
    card = json.loads((run / CARD_FILE).read_text())
    card["calibration"]["curve"] = {"threshold": [0.999, threshold, threshold / 2],
                                    "coverage": [0.2, 0.6, 1.0], "accuracy": [0.995, 0.985, 0.9]}
    (run / CARD_FILE).write_text(json.dumps(card))
    return run


def test_sort_target_accuracy_places_only_confident_files(small_model_dir, tmp_path):
    inbox = make_folder(tmp_path / "inbox", per_class=6)
    model = Model.load(small_model_dir)
    paths = sorted(p for p in inbox.rglob("*") if p.is_file())
    images = torch.stack([model.preprocessing.prepare(Image.open(path).convert("RGB")) for path in paths])
    probabilities = np.sort(model.probabilities(images).max(1))
    threshold = float((probabilities[len(probabilities) // 2 - 1] + probabilities[len(probabilities) // 2]) / 2)
    run = calibrated_copy(small_model_dir, tmp_path, threshold)
    out = tmp_path / "sorted"
    result = run_cli("sort", str(run), str(inbox), str(out), "--target-accuracy", "0.98")
    assert result.returncode == 0, result.stderr
    with open(out / MANIFEST, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(paths)
    for row in rows:
        confident = float(row["probability"]) >= threshold - 1e-6
        assert (Path(row["destination"]).parent.name == "uncertain") != confident
    unsure = sum(Path(row["destination"]).parent.name == "uncertain" for row in rows)
    assert unsure == int((probabilities < threshold).sum()) and 0 < unsure < len(paths)
    assert f"answered {1 - unsure / len(paths):.1%} of the {len(paths)} photos" in result.stderr
    assert f"threshold {threshold:.4f}" in result.stderr


def test_predict_target_accuracy_marks_uncertain_rows(small_model_dir, tmp_path):
    inbox = make_folder(tmp_path / "inbox", per_class=4)
    run = calibrated_copy(small_model_dir, tmp_path, 0.9)
    out = tmp_path / "predictions.csv"
    result = run_cli("predict", str(run), str(inbox), "--target-accuracy", "0.98", "--out", str(out))
    assert result.returncode == 0, result.stderr
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows and all(row["uncertain"] == str(int(float(row["probability"]) < 0.9)) for row in rows)
    assert {row["uncertain"] for row in rows} == {"0", "1"}, [row["probability"] for row in rows]


def test_target_accuracy_errors_are_one_line(small_model_dir, tmp_path):
    run = calibrated_copy(small_model_dir, tmp_path, 0.9)
    model = Model.load(run)
    with pytest.raises(CatalensError, match=r"above what validation ever reached: at best 99.50% accuracy, "
                                            r"answering 20.0% .* ask for at most 0.995"):
        model.answer_threshold(target_accuracy=0.999)
    with pytest.raises(CatalensError, match="not an accuracy"):
        model.answer_threshold(target_accuracy=1.5)
    with pytest.raises(CatalensError, match="not both"):
        model.answer_threshold(0.5, 0.98)
    old = tmp_path / "old"
    shutil.copytree(small_model_dir, old)
    card = json.loads((old / CARD_FILE).read_text())
    del card["calibration"]  # a run trained before catalens calibrated
    (old / CARD_FILE).write_text(json.dumps(card))
    legacy = Model.load(old)
    assert legacy.temperature == 1.0 and not legacy.calibrated
    with pytest.raises(CatalensError, match="no validation curve"):
        legacy.answer_threshold(target_accuracy=0.98)
    result = run_cli("sort", str(old), str(tmp_path / "inbox-missing"), str(tmp_path / "o"), "--target-accuracy",
                     "0.98")
    assert result.returncode != 0 and "no validation curve" in result.stderr and "Traceback" not in result.stderr


def test_sort_threshold_uses_calibrated_probabilities(small_model_dir, tmp_path):
    from catalens.rundir.card import ModelCard

    model = Model.load(small_model_dir)
    raw = Model(model.module, ModelCard.from_dict(dict(model.card.to_dict(), calibration=None)), model.path)
    inbox = make_folder(tmp_path / "inbox", per_class=6)
    paths = sorted(p for p in inbox.rglob("*") if p.is_file())
    images = torch.stack([model.preprocessing.prepare(Image.open(path).convert("RGB")) for path in paths])
    calibrated, uncalibrated = model.probabilities(images).max(1), raw.probabilities(images).max(1)
    # a threshold that splits the calibrated and the uncalibrated probabilities differently
    candidates = np.sort(np.r_[calibrated, uncalibrated])
    middles = (candidates[1:] + candidates[:-1]) / 2
    threshold = next(t for t in middles if 0 < (calibrated < t).sum() != (uncalibrated < t).sum())
    summary = sort_folder(model, inbox, tmp_path / "sorted", threshold=float(threshold), show_progress=False)
    assert summary.uncertain == int((calibrated < threshold).sum()) != int((uncalibrated < threshold).sum())


def test_thresholds_hold_on_the_plateaus_of_a_top_label_map():
    mapping = {"confidence": [0.4, 0.6, 0.8, 0.95], "accuracy": [0.5, 0.9, 0.9, 0.99]}
    probabilities = softmax_numpy(np.random.default_rng(3).normal(0, 2, (200, 5)))
    mapped = apply_top_label_map(probabilities, mapping)
    assert mapped.dtype == np.float64
    plateau = (probabilities.max(1) >= 0.6) & (probabilities.max(1) <= 0.8)
    assert plateau.any() and np.allclose(mapped.max(1)[plateau], 0.9)
    from catalens.models.calibration import answered

    assert answered(mapped.max(1)[plateau], 0.9).all()
    assert answered(float(np.float32(0.9)), 0.9)  # a value once held in float32 still reaches its own threshold


def test_runs_made_before_grouping_keep_their_splits():
    from catalens.report.evaluate import trained_options

    assert trained_options({"options": {"seed": 0, "val_fraction": None}}).group_by == "photo"
    assert trained_options({"options": {"seed": 0, "group_by": None}}).group_by is None


def test_bench_harness_scores_a_test_split_once(monkeypatch):
    monkeypatch.syspath_prepend(BENCH)
    import common

    monkeypatch.setattr(common, "_FINAL_SCORED", {})
    calls = []
    assert common.final("bench-x", "data-a", "recipe 1", lambda: calls.append(1) or 0.9) == 0.9
    with pytest.raises(RuntimeError, match="already scored the test split of data-a"):
        common.final("bench-x", "data-a", "recipe 1", lambda: calls.append(2))
    with pytest.raises(RuntimeError, match="recipe 2 on it too"):
        common.final("bench-x", "data-a", "recipe 2", lambda: calls.append(3))
    assert calls == [1]
    assert common.final("bench-x", "data-b", "recipe 1", lambda: 0.8) == 0.8  # other data: its own final
    assert common.choose({"a": 0.8, "b": 0.9, "c": 0.9}) == "b"
