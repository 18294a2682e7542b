"""Metric definitions shared by training (validation each epoch, `--monitor`) and `catalens evaluate`, so the
number a checkpoint is chosen on is the number the report shows.

macro-F1: the mean F1 over the classes present in the evaluated labels (support > 0). A class absent from
them is left out of the mean, not counted as 0: the splitter keeps classes with one product out of validation,
and such a class says nothing about the model. Predicting it is still an error, which lowers the recall of the
true class.
"""

from __future__ import annotations

import numpy as np


def micro_f1(given: np.ndarray, truth: np.ndarray) -> float:
    """Multi-label micro-F1: every (item, tag) decision pooled; `given` and `truth` 0/1 or bool, (items, tags)."""
    given, truth = np.asarray(given, bool), np.asarray(truth) > 0
    return 2 * int((given & truth).sum()) / max(1, int(given.sum() + truth.sum()))


def per_class_scores(truth: np.ndarray, predicted: np.ndarray, num_classes: int):
    """(precision, recall, f1, support) per class index 0..num_classes-1 (0 where undefined)."""
    from sklearn.metrics import precision_recall_fscore_support  # a second of every command's start, imported here

    return precision_recall_fscore_support(truth, predicted, labels=list(range(num_classes)), zero_division=0)


def present_mean(values: np.ndarray, support: np.ndarray) -> float:
    """The mean of per-class `values` over the classes with support (the macro average used everywhere)."""
    present = support > 0
    return float(values[present].mean()) if present.any() else 0.0


def macro_f1(truth: np.ndarray, predicted: np.ndarray, num_classes: int) -> float:
    _, _, f1, support = per_class_scores(truth, predicted, num_classes)
    return present_mean(f1, support)
