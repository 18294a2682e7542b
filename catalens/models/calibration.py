"""Probabilities that mean what they say: temperature scaling, calibration error and the risk-coverage curve.

One small function per job over plain arrays, used by training (fit on the validation split), the run directory
(`Model` divides logits by the stored temperature), `catalens evaluate` (ECE, reliability diagram, risk-coverage)
and `sort`/`predict --target-accuracy` (a threshold read off the validation curve).

    temperature = fit_temperature(val_logits, val_labels)          # one scalar per head
    ece = expected_calibration_error(confidence, correct)          # 15 equal-mass bins
    curve = risk_coverage(confidence, correct)                     # answer only when p >= threshold
    threshold_for(curve, 0.98)                                     # the most coverage at >= 98 % accuracy
"""

from __future__ import annotations

import numpy as np

ECE_BINS = 15
TOLERANCE = 1e-6  # a probability this close under a threshold counts as reaching it (stored values have 6 decimals)
ABSENT = 1e3  # a true-class logit this far under the row's best: a class the head never predicts (none in train)
CURVE_POINTS = 101  # points of the validation curve kept in the model card
UNCALIBRATED = "the run has no validation split to fit a temperature on"


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean NLL of the true labels under softmax(logits / temperature)."""
    if not len(labels):
        return 0.0
    scores = log_softmax(np.asarray(logits, np.float64) / temperature)
    return float(-scores[np.arange(len(labels)), np.asarray(labels, np.int64)].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T > 0 that minimises the NLL of softmax(logits / T) on held-out rows (Guo et al. 2017).
    A one-dimensional convex problem in log T, solved by bounded scalar minimisation (T in [0.05, 20])."""
    from scipy.optimize import minimize_scalar

    logits, labels = np.asarray(logits, np.float64), np.asarray(labels, np.int64)
    if len(labels):  # rows of classes the head cannot predict would drive T to its bound for nothing
        known = logits[np.arange(len(labels)), labels] > logits.max(axis=1) - ABSENT
        logits, labels = logits[known], labels[known]
    if len(labels) < 2:
        return 1.0
    result = minimize_scalar(lambda log_t: negative_log_likelihood(logits, labels, float(np.exp(log_t))),
                             bounds=(np.log(0.05), np.log(20.0)), method="bounded", options={"xatol": 1e-4})
    temperature = float(np.exp(result.x))
    # never worse than leaving the logits alone (the optimiser stops within its tolerance)
    if negative_log_likelihood(logits, labels, temperature) > negative_log_likelihood(logits, labels, 1.0):
        return 1.0
    return temperature


def confidence_and_correct(probabilities: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The top probability of each row and whether the top class is the true one."""
    probabilities = np.asarray(probabilities)
    return probabilities.max(axis=1), probabilities.argmax(axis=1) == np.asarray(labels)


def equal_mass_bins(confidence: np.ndarray, bins: int = ECE_BINS) -> list[np.ndarray]:
    """Row indices split into `bins` groups of (nearly) equal size, by increasing confidence."""
    order = np.argsort(np.asarray(confidence), kind="stable")
    return [part for part in np.array_split(order, min(bins, max(1, len(order)))) if len(part)]


def reliability_bins(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> list[dict]:
    """Per equal-mass bin: its mean confidence, its accuracy and its size (the reliability diagram's points)."""
    confidence, correct = np.asarray(confidence, np.float64), np.asarray(correct, np.float64)
    return [{"confidence": float(confidence[part].mean()), "accuracy": float(correct[part].mean()),
             "count": int(len(part))} for part in equal_mass_bins(confidence, bins)]


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE over equal-mass bins: the size-weighted mean of |accuracy - mean confidence| per bin."""
    total = len(confidence)
    if not total:
        return 0.0
    return float(sum(row["count"] / total * abs(row["accuracy"] - row["confidence"])
                     for row in reliability_bins(confidence, correct, bins)))


def risk_coverage(confidence: np.ndarray, correct: np.ndarray) -> dict[str, list[float]]:
    """When only answers with probability >= threshold are given: for each distinct threshold (highest first),
    the share of rows answered (coverage) and the accuracy of those answers."""
    confidence, correct = np.asarray(confidence, np.float64), np.asarray(correct, np.float64)
    if not len(confidence):
        return {"threshold": [], "coverage": [], "accuracy": []}
    order = np.argsort(-confidence, kind="stable")
    sorted_confidence, right = confidence[order], np.cumsum(correct[order])
    # the last row of each group of equal confidences: a threshold answers all of a tie or none of it
    ends = np.flatnonzero(np.r_[sorted_confidence[1:] != sorted_confidence[:-1], True])
    answered = ends + 1
    return {"threshold": sorted_confidence[ends].tolist(), "coverage": (answered / len(confidence)).tolist(),
            "accuracy": (right[ends] / answered).tolist()}


def compact_curve(curve: dict[str, list[float]], points: int = CURVE_POINTS) -> dict[str, list[float]]:
    """At most `points` points of a risk-coverage curve, evenly spread over its coverage, ends kept."""
    size = len(curve["threshold"])
    if size <= points:
        return {key: [round(float(value), 6) for value in values] for key, values in curve.items()}
    coverage = np.asarray(curve["coverage"])
    keep = np.unique(np.r_[np.searchsorted(coverage, np.linspace(coverage[0], 1.0, points)).clip(0, size - 1),
                           0, size - 1])
    return {key: [round(float(values[i]), 6) for i in keep] for key, values in curve.items()}


def threshold_for(curve: dict[str, list[float]], target: float) -> dict | None:
    """The threshold that answers the most rows at accuracy >= target on this curve, with its coverage and
    accuracy; None when no threshold reaches the target."""
    accuracy, coverage = np.asarray(curve["accuracy"]), np.asarray(curve["coverage"])
    reaching = np.flatnonzero(accuracy >= target - 1e-12)
    if not len(reaching):
        return None
    best = reaching[np.argmax(coverage[reaching])]
    return {"threshold": float(curve["threshold"][best]), "coverage": float(coverage[best]),
            "accuracy": float(accuracy[best])}


def best_reachable(curve: dict[str, list[float]]) -> dict | None:
    """The most accurate point of a curve (the most coverage among equals)."""
    if not curve["threshold"]:
        return None
    accuracy, coverage = np.asarray(curve["accuracy"]), np.asarray(curve["coverage"])
    candidates = np.flatnonzero(accuracy >= accuracy.max() - 1e-12)
    best = candidates[np.argmax(coverage[candidates])]
    return {"threshold": float(curve["threshold"][best]), "coverage": float(coverage[best]),
            "accuracy": float(accuracy[best])}


def coverage_at(confidence: np.ndarray, correct: np.ndarray, threshold: float) -> dict:
    """What a threshold gives on other rows: the share answered and the accuracy of those answers."""
    confidence, correct = np.asarray(confidence), np.asarray(correct)
    kept = answered(confidence, threshold)
    return {"threshold": float(threshold), "coverage": float(kept.mean()) if len(kept) else 0.0,
            "accuracy": float(correct[kept].mean()) if kept.any() else None, "answered": int(kept.sum())}


def answered(probability, threshold: float):
    """Whether a top probability reaches a threshold (within TOLERANCE: thresholds are stored rounded)."""
    return np.asarray(probability) >= threshold - TOLERANCE


def fit_top_label_map(confidence: np.ndarray, correct: np.ndarray) -> dict[str, list[float]]:
    """An isotonic (non-decreasing) map from the top probability to the chance that the top class is right
    (top-label calibration), as the points of a piecewise-linear function."""
    from sklearn.isotonic import IsotonicRegression

    fitted = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(confidence, np.asarray(correct, float))
    return {"confidence": [round(float(v), 6) for v in fitted.X_thresholds_],
            "accuracy": [round(float(v), 6) for v in fitted.y_thresholds_]}


def apply_top_label_map(probabilities: np.ndarray, mapping: dict | None) -> np.ndarray:
    """Probabilities whose top entry is replaced by the map's value and the others rescaled to sum to one; the
    ranking of the classes never changes (the top class stays on top)."""
    if not mapping:
        return probabilities
    probabilities = np.asarray(probabilities, np.float64)
    rows, top = np.arange(len(probabilities)), probabilities.argmax(1)
    confidence = probabilities[rows, top]
    others = np.maximum(1.0 - confidence, 1e-12)
    second = np.sort(probabilities, axis=1)[:, -2] if probabilities.shape[1] > 1 else np.zeros(len(rows))
    mapped = np.interp(confidence, mapping["confidence"], mapping["accuracy"])
    # the top class keeps the top place: at least the rescaled runner-up, and in (0, 1)
    floor = second / (others + second)
    mapped = np.clip(np.maximum(mapped, floor + 1e-9), 1e-6, 1 - 1e-9)
    out = probabilities * ((1.0 - mapped) / others)[:, None]
    out[rows, top] = mapped
    return out


def choose_top_label_map(scaled_probabilities: np.ndarray, labels: np.ndarray, folds: int = 5, seed: int = 0,
                         logits: np.ndarray | None = None) -> tuple[dict | None, dict]:
    """Temperature scaling alone, or followed by a top-label isotonic map: chosen by the expected calibration
    error of out-of-fold predictions on the validation rows (each fold calibrated by the other folds; with
    `logits`, the temperature is refitted per fold too). Returns (the map fitted on all rows, or None; the
    out-of-fold ECE of each)."""
    from catalens.loading.preprocess import softmax_numpy

    labels = np.asarray(labels)
    if len(labels) < 10 * folds:
        return None, {}
    rng = np.random.default_rng(seed)
    fold_of = rng.permutation(len(labels)) % folds
    plain, mapped = np.zeros_like(scaled_probabilities, np.float64), np.zeros_like(scaled_probabilities, np.float64)
    for fold in range(folds):
        fit, held = fold_of != fold, fold_of == fold
        if logits is not None:
            temperature = fit_temperature(logits[fit], labels[fit])
            fit_p, held_p = softmax_numpy(logits[fit] / temperature), softmax_numpy(logits[held] / temperature)
        else:
            fit_p, held_p = scaled_probabilities[fit], scaled_probabilities[held]
        plain[held] = held_p
        mapped[held] = apply_top_label_map(held_p, fit_top_label_map(*confidence_and_correct(fit_p, labels[fit])))
    scores = {"temperature": expected_calibration_error(*confidence_and_correct(plain, labels)),
              "temperature + top-label isotonic": expected_calibration_error(*confidence_and_correct(mapped, labels))}
    scores = {name: round(score, 6) for name, score in scores.items()}
    if scores["temperature + top-label isotonic"] >= scores["temperature"]:
        return None, scores
    return fit_top_label_map(*confidence_and_correct(scaled_probabilities, labels)), scores


def calibration_summary(logits: np.ndarray, calibrated: np.ndarray, labels: np.ndarray) -> dict:
    """NLL and ECE of held-out rows before (`logits`) and after (`calibrated`: probabilities) calibration, and
    the calibrated risk-coverage curve (compacted) with the thresholds for 98 % and 99 % accuracy."""
    from catalens.loading.preprocess import softmax_numpy

    labels = np.asarray(labels, np.int64)
    logits, calibrated = np.asarray(logits, np.float64), np.asarray(calibrated, np.float64)
    before = confidence_and_correct(softmax_numpy(logits), labels)
    after = confidence_and_correct(calibrated, labels)
    curve = compact_curve(risk_coverage(*after))
    picked = calibrated[np.arange(len(labels)), labels] if len(labels) else np.zeros(0)
    return {
        "status": "calibrated",
        "items": int(len(labels)),
        "nll_uncalibrated": round(negative_log_likelihood(logits, labels), 6),
        "nll": round(float(-np.log(np.maximum(picked, 1e-12)).mean()), 6) if len(labels) else 0.0,
        "ece_uncalibrated": round(expected_calibration_error(*before), 6),
        "ece": round(expected_calibration_error(*after), 6),
        "curve": curve,
        "targets": {str(target): threshold_for(curve, target) for target in (0.98, 0.99)},
    }


def uncalibrated(reason: str = UNCALIBRATED) -> dict:
    """The card's calibration entry of a run that could not be calibrated."""
    return {"status": "uncalibrated", "temperature": 1.0, "reason": reason}
