"""Calibrated probabilities (issue 25): catalens's temperature scaling against scikit-learn's calibrators, in the
same run, on Fashion-MNIST and on real clothing photos.

For each data set catalens trains with a validation split carved from train (the temperature is fitted there),
and `catalens evaluate --split test` scores the held-out test split once (bench/common.final). Beside it, on the
same network's logits: scikit-learn's CalibratedClassifierCV (sigmoid, isotonic and temperature) fitted on the
same validation rows; on clothing-small also the practitioner's whole pipeline,
CalibratedClassifierCV(LogisticRegression(C=0.5), cv=5) on the same Lite0 features.

Data:
- Fashion-MNIST: 60,000 train (validation carved from it by catalens), 10,000 test; `fastcnn`.
- clothing-small: train/ is train (validation carved from it), validation/ (341 real photos) is the test split;
  the Lite0 linear head (`--model tf_efficientnet_lite0 --pretrained --freeze backbone`).

Targets: ECE after scaling <= 0.03 and below ECE before on each test split; on clothing-small,
`--target-accuracy 0.98` keeps >= 60 % of the test photos with >= 97 % of those right.

    python bench/calibration.py --record

Needs scikit-learn >= 1.8 (CalibratedClassifierCV(method="temperature"), FrozenEstimator); catalens itself
does not.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time

import numpy as np
from common import FASHION, REPO, catalens, clothing_small_with_test, final, final_row, lite0_features, publish

OUT = REPO / "bench" / "out"
CLOTHING_MODEL = ["--model", "tf_efficientnet_lite0", "--pretrained", "--freeze", "backbone"]


def split_logits(run, data: str, split: str):
    """The run's uncalibrated logits (up to a per-row constant) and labels on one split, via catalens's own
    prediction path (temperature-scaled probabilities ** T)."""
    from catalens.inference.predict import predict_catalog
    from catalens.report.evaluate import align_classes, evaluation_catalog
    from catalens.rundir.run import Model

    model = Model.load(run)
    catalog, _, _ = evaluation_catalog(model, data, None)
    part = catalog.split(split)
    result = predict_catalog(model, part, show_progress=False)
    logits = np.log(np.maximum(result.scaled, 1e-300)) * model.temperature  # before the top-label map
    return logits, align_classes(part, model)[result.rows]


def sklearn_calibrators(val_logits, val_labels, test_logits, test_labels) -> dict[str, float]:
    """ECE on test of scikit-learn's CalibratedClassifierCV on the same network's logits, fitted on validation."""
    from sklearn.base import BaseEstimator, ClassifierMixin
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.frozen import FrozenEstimator

    from catalens.loading.preprocess import softmax_numpy
    from catalens.models.calibration import confidence_and_correct, expected_calibration_error

    class Logits(ClassifierMixin, BaseEstimator):  # the trained network, as a fitted scikit-learn classifier
        def fit(self, x, y):
            self.classes_ = np.arange(x.shape[1])
            return self

        def decision_function(self, x):
            return np.asarray(x)

        def predict_proba(self, x):
            return softmax_numpy(np.asarray(x, np.float64))

        def predict(self, x):
            return np.asarray(x).argmax(1)

    frozen = FrozenEstimator(Logits().fit(val_logits, val_labels))
    out = {}
    for method in ("sigmoid", "isotonic", "temperature"):
        calibrated = CalibratedClassifierCV(frozen, method=method).fit(val_logits, val_labels)
        probabilities = calibrated.predict_proba(test_logits)
        full = np.zeros((len(test_logits), val_logits.shape[1]))
        full[:, calibrated.classes_] = probabilities
        out[f"sklearn {method} (same logits)"] = expected_calibration_error(*confidence_and_correct(full, test_labels))
    return out


def practitioner_pipeline(data: str) -> dict:
    """CalibratedClassifierCV(LogisticRegression(C=0.5), cv=5) on Lite0 features of the train photos, ECE and
    accuracy on the test photos."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.linear_model import LogisticRegression

    from catalens.data import DataOptions, load_catalog
    from catalens.models.calibration import confidence_and_correct, expected_calibration_error

    started = time.perf_counter()
    catalog = load_catalog(data, DataOptions(val_fraction=0))
    x, y, _ = lite0_features({split: catalog.split(split) for split in ("train", "test")})
    model = CalibratedClassifierCV(LogisticRegression(C=0.5, max_iter=3000), cv=5).fit(x["train"], y["train"])
    probabilities = model.predict_proba(x["test"])
    confidence, correct = confidence_and_correct(probabilities, y["test"])
    return {"ece": expected_calibration_error(confidence, correct), "accuracy": float(correct.mean()),
            "seconds": time.perf_counter() - started}


def run_one(name: str, data: str, train_args: list[str], reuse: bool = False) -> dict:
    from catalens.loading.preprocess import softmax_numpy
    from catalens.models.calibration import confidence_and_correct, expected_calibration_error

    run = OUT / f"calibration-{name}"
    if reuse and (run / "model_card.json").is_file():
        train_s = float("nan")
    else:
        shutil.rmtree(run, ignore_errors=True)
        train_s = catalens("train", "--data", data, *train_args, "--out", str(run))
    card = json.loads((run / "model_card.json").read_text())
    evaluation = final("calibration", name, " ".join(train_args),
                       lambda: catalens("evaluate", str(run), "--data", data, "--split", "test", "--out",
                                        str(run / "eval"), "--no-leakage-check"))
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    val_logits, val_labels = split_logits(run, data, "val")
    test_logits, test_labels = split_logits(run, data, "test")
    baselines = sklearn_calibrators(val_logits, val_labels, test_logits, test_labels)
    raw = expected_calibration_error(*confidence_and_correct(softmax_numpy(test_logits), test_labels))
    return {"name": name, "train_s": train_s, "eval_s": evaluation, "card": card["calibration"],
            "metrics": metrics, "baselines": baselines, "raw_check": raw}


def describe(result: dict) -> str:
    calibration, metrics = result["metrics"]["calibration"], result["metrics"]
    chosen = "temperature + top-label isotonic map" if calibration["top_label_map"] else "temperature alone"
    text = (f"{result['name']}: test {metrics['items']:,} items, accuracy {metrics['accuracy']:.4f}; temperature "
            f"{calibration['temperature']:.3f} (fitted on {calibration['validation_items']:,} validation items), "
            f"{chosen} (out-of-fold ECE on validation: " + ", ".join(
                f"{name} {score:.4f}" for name, score in result["card"].get("choice_out_of_fold_ece", {}).items())
            + "); "
            f"test ECE **{calibration['ece_uncalibrated']:.4f} -> {calibration['ece']:.4f}**")
    target = calibration["targets"].get("0.98")
    if target:
        here, chosen = target["evaluated"], target["validation"]
        text += (f"; `--target-accuracy 0.98` (threshold {chosen['threshold']:.3f}, {chosen['coverage']:.1%} of "
                 f"validation at {chosen['accuracy']:.1%}) answers **{here['coverage']:.1%}** of test at "
                 f"**{here['accuracy']:.1%}**")
    text += "; same logits, scikit-learn CalibratedClassifierCV fitted on the same validation rows, test ECE: " + \
        ", ".join(f"{method.split()[1]} {ece:.4f}" for method, ece in result["baselines"].items())
    if "practitioner" in result:
        p = result["practitioner"]
        text += (f"; practitioner's CalibratedClassifierCV(LogisticRegression(C=0.5), cv=5) on the same Lite0 "
                 f"features: accuracy {p['accuracy']:.4f}, test ECE {p['ece']:.4f}")
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fm-epochs", type=int, default=10)
    parser.add_argument("--only", choices=["fashion-mnist", "clothing-small"], default=None)
    parser.add_argument("--reuse", action="store_true", help="keep runs already trained by this bench")
    parser.add_argument("--record", action="store_true", help="append the rows to BENCHMARKS.md")
    args = parser.parse_args()
    results = []
    if args.only in (None, "clothing-small"):
        data = clothing_small_with_test("calibration-clothing-data")
        result = run_one("clothing-small", data, CLOTHING_MODEL, args.reuse)
        result["practitioner"] = practitioner_pipeline(data)
        results.append(result)
    if args.only in (None, "fashion-mnist"):
        results.append(run_one("fashion-mnist", FASHION, ["--model", "fastcnn", "--epochs", str(args.fm_epochs)],
                               args.reuse))
    publish([final_row(describe(result), "validation (the temperature and the 98 % threshold)")
             for result in results], args.record)


if __name__ == "__main__":
    main()
