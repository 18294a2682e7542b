"""Label issues: out-of-fold class probabilities from k-fold linear heads on the cached features (seconds, not
k trainings), then confident learning (cleanlab's `find_label_issues`), ranked by self-confidence: the lower the
model's out-of-fold probability of the given label, the more likely the label is wrong."""

from __future__ import annotations

import numpy as np
import torch

from catalens.models.linear_head import fit_linear_head, folds_of, lbfgs_logistic
from catalens.progress import warn

# The L2 strengths tried for the standardised, unit-length features above (the head's own grid is for raw features).
STANDARDISED_C_GRID = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)


def out_of_fold(features: np.ndarray, labels: np.ndarray, num_classes: int, folds: int = 5,
                seed: int = 0) -> np.ndarray | None:
    """(N, classes) probabilities, each item's from a head that never saw it; None when the classes are too small
    for `folds` folds (fewer than 2 classes with at least `folds` items each)."""
    parts = folds_of(labels, folds, seed)
    if len(np.unique(labels)) < 2 or not parts:
        return None
    x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)).double()
    x = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    z = (x - mean) / std
    y = torch.from_numpy(labels).long()
    C = fit_linear_head(z[None].float(), y, num_classes, seed=seed, folds=folds, grid=STANDARDISED_C_GRID,
                        criterion="accuracy").C  # the issue-28 rows were measured so
    probabilities = np.zeros((len(labels), num_classes), np.float64)
    covered = np.zeros(len(labels), bool)
    for train_rows, test_rows in parts:
        weight, bias = lbfgs_logistic(z[train_rows], y[train_rows], num_classes, C)
        probabilities[test_rows] = torch.softmax(z[test_rows] @ weight.T + bias, 1).numpy()
        covered[test_rows] = True
    if not covered.all():  # classes smaller than the folds: their items are scored by a head that saw them
        weight, bias = lbfgs_logistic(z, y, num_classes, C)
        rest = np.flatnonzero(~covered)
        probabilities[rest] = torch.softmax(z[rest] @ weight.T + bias, 1).numpy()
        warn(f"{len(rest)} item(s) of classes with fewer than {folds} items are scored in-sample (weaker evidence)")
    return probabilities


def label_suspects(probabilities: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows flagged by confident learning, ranked most likely wrong first; score of every row = 1 - p(given))."""
    from cleanlab.filter import find_label_issues

    score = 1.0 - probabilities[np.arange(len(labels)), labels]
    present = np.unique(labels)
    remap = np.full(probabilities.shape[1], -1)
    remap[present] = np.arange(len(present))  # cleanlab wants every class of pred_probs present in the labels
    kept = probabilities[:, present]
    kept = kept / kept.sum(1, keepdims=True)
    flagged = find_label_issues(remap[labels], kept, filter_by="prune_by_noise_rate",
                                return_indices_ranked_by="self_confidence")
    return np.asarray(flagged, dtype=np.int64), score


def disagreements(probabilities: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Rows whose out-of-fold top class is not the given label, the least likely given label first. Listed below
    confident learning's flags: on a small catalog one moved photo does not shift confident learning's noise-rate
    estimates, so it prunes nothing, while the heads that never saw the photo still call it another class. Chosen
    on 150-photo subsets of clothing-small with 1, 3 and 10 flipped labels (bench/audit.py --only small: recall of
    the flips 0.67 / 0.78 / 0.88 with confident learning alone, 1.00 / 1.00 / 0.97 with these added; a threshold on
    the probability ratio or on p(given) lost one flip in six at 1 flip)."""
    given = probabilities[np.arange(len(labels)), labels]
    rows = np.flatnonzero(probabilities.argmax(1) != labels)
    return rows[np.argsort(given[rows], kind="stable")]


def confused_pairs(probabilities: np.ndarray, labels: np.ndarray, classes: list[str], top: int = 5) -> list[dict]:
    """The class pairs the out-of-fold heads confuse most: given label -> predicted label, with counts."""
    predicted = probabilities.argmax(1)
    matrix = np.zeros((len(classes), len(classes)), np.int64)
    np.add.at(matrix, (labels, predicted), 1)
    np.fill_diagonal(matrix, 0)
    order = np.argsort(matrix, axis=None)[::-1][:top]
    totals = np.bincount(labels, minlength=len(classes))
    return [{"given": classes[i], "predicted": classes[j], "count": int(matrix[i, j]),
             "share_of_given": float(matrix[i, j] / max(1, totals[i]))}
            for i, j in zip(*np.unravel_index(order, matrix.shape)) if matrix[i, j]]
