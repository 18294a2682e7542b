"""The classifier on frozen features, fitted like a well-regularised linear probe: multinomial logistic
regression by full-batch L-BFGS on the features as they are (centred, not scaled), its L2 strength chosen by
cross-validation on the training split, each view of a photo (the photo and its mirror image) a training sample.
The fitted weights are folded back into the network's own Linear classifier, so export, predict and serve are unchanged.

This is what a practitioner's 20-line probe does, made the default: an SGD-trained head on the same features
was 5 points behind it (BENCHMARKS.md). Standardising the features first (this head's earlier form) lost to the
probe on both real sets: on fashion-products' 75 article types 0.881 against 0.896 test accuracy.

Every linear head of catalens is fitted here, with one rule for C (`pick_C`): this dense head, the distilled
students (engine/distill.py), the audit's out-of-fold heads, and the --text heads on sparse TF-IDF
(`sparse_logistic`, `choose_sparse_C`; models/fusion.py)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from catalens.progress import info

# Inverse L2 strengths tried by cross-validation (scikit-learn's C, on the raw pooled features).
C_GRID = (0.03, 0.1, 0.2, 0.5, 1.0, 3.0)
DEFAULT_C = 0.5  # when there are too few items to cross-validate (the practitioner's probe)
MAX_CV_ITEMS = 20_000  # cross-validate on a seeded random sample of at most this many items (big catalogs)
# Cross-validation fits run in float32 and stop after CV_ITERATIONS: on fashion-products (75 classes, 6,000 items)
# the whole C grid took seconds instead of a minute (float64, 300 iterations, which never met the tolerance) with
# held-out accuracies within 0.01. The final fit is float64, 300 iterations.
CV_ITERATIONS = 100
# Each fold fits the grid's C values in increasing order, each from the previous one's solution (a warm-started
# regularisation path, as scikit-learn's LogisticRegressionCV does): after the first C, WARM_ITERATIONS suffice. On
# fashion-products (5 targets, validation) the path halved the cross-validation time and chose the same C values.
WARM_ITERATIONS = 40
# The --text heads (models/fusion.py) on sparse TF-IDF blocks of unit length, fitted by scikit-learn: C on a held
# out fifth of the training rows (a sparse fit per fold and C costs tens of seconds on 75 classes).
SPARSE_C_GRID = (3.0, 10.0, 30.0)
SPARSE_DEFAULT_C = 10.0  # when the training split is too small to hold a part out
# Post-hoc logit adjustment (Menon et al. 2021, "Long-tail learning via logit adjustment"): the fitted head's logits
# less tau x log(class prior), tau chosen after C on the same out-of-fold logits (no extra fit), folded into the
# bias. tau = 0: the plain head; tau = 1: the balanced-error Bayes rule. Only under criterion "accuracy+macro_f1".
TAU_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)


@dataclass
class LinearFit:
    weight: torch.Tensor  # (classes, features) in the raw feature space
    bias: torch.Tensor  # (classes,)
    C: float
    cv_accuracy: dict[float, float] = field(default_factory=dict)  # at the chosen logit adjustment
    cv_macro_f1: dict[float, float] = field(default_factory=dict)  # at the chosen logit adjustment
    cv_log_loss: dict[float, float] = field(default_factory=dict)  # what C is chosen by (criterion accuracy+macro_f1)
    seconds: float = 0.0
    grouped: bool = False  # folds kept products / near-identical photos together
    logit_adjustment: float = 0.0  # tau: the bias holds -tau x log(training class share)

    def describe(self) -> dict:
        return {"method": "multinomial logistic regression (L-BFGS) on centred features, L2 chosen by "
                          "cross-validation on the training split" + (
                              " (out-of-fold log-loss)" if self.cv_macro_f1 else "") + (
                              " (folds keep each product, or each group of near-identical photos, together)"
                              if self.grouped else "") + (
                              f"; logits adjusted by -{self.logit_adjustment:g} x log(class share), chosen after C"
                              if self.logit_adjustment else ""),
                "C": self.C, "logit_adjustment": self.logit_adjustment,
                "cv_accuracy": {str(c): round(a, 4) for c, a in self.cv_accuracy.items()},
                **({"cv_macro_f1": {str(c): round(f, 4) for c, f in self.cv_macro_f1.items()}}
                   if self.cv_macro_f1 else {}),
                **({"cv_log_loss": {str(c): round(f, 4) for c, f in self.cv_log_loss.items()}}
                   if self.cv_log_loss else {}),
                "seconds": round(self.seconds, 1)}


def pick_C(scores: dict[float, float], default: float) -> float:
    """Every head's rule: the smallest C (the strongest regularisation) among those with the best held-out score."""
    if not scores:
        return default
    best = max(scores.values())
    return min(C for C, score in scores.items() if score >= best - 1e-9)


def lbfgs(x: torch.Tensor, outputs: int, data_loss, C: float, rows: int, iterations: int = 300, start=None):
    """Minimise data_loss(logits) + ||W||^2 / (2 C n) over a linear map (W, b) by full-batch L-BFGS, from zero or
    from `start` (W, b)."""
    weight = (start[0].clone() if start else torch.zeros(outputs, x.shape[1], dtype=x.dtype)).requires_grad_()
    bias = (start[1].clone() if start else torch.zeros(outputs, dtype=x.dtype)).requires_grad_()
    optimizer = torch.optim.LBFGS([weight, bias], lr=1, max_iter=iterations, history_size=20, tolerance_grad=1e-6,
                                  tolerance_change=1e-9, line_search_fn="strong_wolfe")
    penalty = 1.0 / (C * rows)

    def closure():
        optimizer.zero_grad()
        loss = data_loss(x @ weight.T + bias) + 0.5 * penalty * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return weight.detach(), bias.detach()


def lbfgs_logistic(x: torch.Tensor, y: torch.Tensor, num_classes: int, C: float, class_weight=None,
                   iterations: int = 300, start=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimise mean cross-entropy + ||W||^2 / (2 C n) (scikit-learn's LogisticRegression objective, divided
    by C n) with full-batch L-BFGS; returns (W, b)."""
    return lbfgs(x, num_classes, lambda logits: F.cross_entropy(logits, y, weight=class_weight), C, len(y),
                 iterations, start)


def lbfgs_sigmoid(x: torch.Tensor, y: torch.Tensor, C: float, iterations: int = 300,
                  start=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Multi-label: one logistic regression per column of y (0/1, N x T), all fitted at once by full-batch
    L-BFGS; per tag, scikit-learn's objective divided by C n. Returns (W (T, D), b (T,))."""
    return lbfgs(x, y.shape[1], lambda logits: F.binary_cross_entropy_with_logits(logits, y, reduction="sum")
                 / len(y), C, len(y), iterations, start)


def regularisation_path(parts, grid, fit, predict) -> dict[float, np.ndarray]:
    """Cross-validation over the C grid: in each fold (train rows, test rows) the C values in increasing order,
    each fitted by `fit(train rows, C, iterations, start)` from the previous solution (WARM_ITERATIONS after the
    first); {C: `predict((W, b), test rows)` of every fold, concatenated in the folds' order}."""
    found: dict[float, list] = {c: [] for c in grid}
    for train_part, test_part in parts:
        solution = None
        for c in sorted(grid):
            solution = fit(torch.as_tensor(train_part), c, CV_ITERATIONS if solution is None else WARM_ITERATIONS,
                           solution)
            found[c].append(predict(solution, torch.as_tensor(test_part)))
    return {c: np.concatenate(found[c]) for c in grid if found[c]}


def choose_sigmoid_C(views: torch.Tensor, y: torch.Tensor, seed: int = 0, folds: int = 5, grid=C_GRID,
                     groups: np.ndarray | None = None) -> tuple[float, dict[float, float]]:
    """The multi-label head's C (--tags): `folds`-fold cross-validation over the training items (views, N, D),
    centred, each scored by the micro-F1 of its out-of-fold tags given at 0.5 (first view); the smallest C among
    the best. On fashion-products' 20 style tags the validation micro-F1 was 0.832 at C=0.1 against 0.826 at the
    probe's 0.5 (BENCHMARKS.md, issue 30). DEFAULT_C when there are too few items."""
    from catalens.metrics import micro_f1

    z = (views - views.reshape(-1, views.shape[-1]).mean(0)).float()
    if len(y) > MAX_CV_ITEMS:  # big catalogs: a seeded sample of the items, as fit_linear_head does
        items = np.sort(np.random.default_rng(seed).choice(len(y), MAX_CV_ITEMS, replace=False))
        z, y, groups = z[:, items], y[items], None if groups is None else np.asarray(groups)[items]
    parts = folds_of(np.zeros(len(y), np.int64), folds, seed, groups)
    given = regularisation_path(
        parts, grid, lambda rows, c, iterations, start: lbfgs_sigmoid(
            z[:, rows].reshape(-1, z.shape[-1]), y[rows].float().repeat(len(z), 1), c, iterations, start),
        lambda solution, rows: (z[0, rows] @ solution[0].T + solution[1]).numpy() >= 0)
    truth = y[np.concatenate([test for _, test in parts])].numpy() if parts else None
    scores = {c: micro_f1(given[c], truth) for c in given}
    C = pick_C(scores, DEFAULT_C)
    if scores:
        info("tags head: cross-validated micro-F1 by C: " + ", ".join(f"{c:g}: {f:.4f}" for c, f in scores.items())
             + f"; chose C={C:g}")
    return C, scores


def folds_of(labels: np.ndarray, folds: int, seed: int,
             groups: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified folds over items, keeping each group (a product, a burst of near-identical photos) in one
    fold when `groups` are given; classes with fewer items than folds stay in every training part."""
    from sklearn.model_selection import GroupKFold, StratifiedGroupKFold, StratifiedKFold

    counts = np.bincount(labels)
    rare = np.isin(labels, np.flatnonzero(counts < folds))
    common = np.flatnonzero(~rare)
    if len(common) < folds * 2:
        return []
    distinct = len(np.unique(groups[common])) if groups is not None else len(common)
    if groups is not None and folds <= distinct < len(common):  # some group holds several items
        # StratifiedGroupKFold holds a groups x classes table: without stratification beyond ~50 M cells
        splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed) \
            if distinct * (labels.max() + 1) <= 50_000_000 else GroupKFold(n_splits=folds)
        parts = splitter.split(np.zeros(len(common)), labels[common], groups[common])
    else:
        parts = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(np.zeros(len(common)),
                                                                                       labels[common])
    return [(np.concatenate([common[a], np.flatnonzero(rare)]), common[b]) for a, b in parts]


def fit_linear_head(features: torch.Tensor, labels: torch.Tensor, num_classes: int, seed: int = 0,
                    C: float | None = None, folds: int = 5, grid=C_GRID, balanced: bool = False,
                    groups: np.ndarray | None = None, criterion: str = "accuracy+macro_f1") -> LinearFit:
    """Fit the classifier on cached features (views, N, D): every view of an item is a training sample,
    features centred; C by `folds`-fold cross-validation over items (scored on their first view; `groups`, one
    per item, stay in one fold) unless given. Returns weights for the raw features.

    `criterion` (`choose_C_and_tau`): "accuracy+macro_f1" (the default) weighs the rare classes too: C by the
    out-of-fold log-loss, then a logit adjustment (TAU_GRID) by out-of-fold accuracy + macro-F1. By accuracy
    alone the smallest C among near-ties won, and on fashion-products (validation split) that cost 5 points of
    macro-F1 on 75 article types (BENCHMARKS.md, issue 30). "accuracy": the audit's out-of-fold heads (tau 0)."""
    if criterion not in ("accuracy", "accuracy+macro_f1"):
        raise ValueError(f"criterion {criterion!r}: accuracy or accuracy+macro_f1")
    started = time.time()
    views = features.double()
    mean = views.reshape(-1, views.shape[-1]).mean(0)
    std = torch.ones_like(mean)  # not scaled: scaling lost to the raw-feature probe (module doc)
    z = (views - mean) / std
    # Only the classes with training items are fitted (an absent class's softmax row has no data, and left in it
    # perturbed the others: a run whose label list held one colour seen only in test chose another logit adjustment
    # than the same head fitted as a second target; BENCHMARKS.md, issue 30); absent classes are never predicted.
    counts = torch.bincount(labels.long(), minlength=num_classes).double()
    present = counts > 0
    kept = torch.nonzero(present).flatten()
    y = torch.cumsum(present.long(), 0)[labels.long()] - 1  # index among the present classes
    counts = counts[kept]
    fitted_classes = len(kept)
    class_weight = (counts.sum() / counts / fitted_classes) if balanced else None
    v = len(z)

    def fit(rows, c, iterations=None, start=None):  # with iterations: a cross-validation fit, float32
        x = z[:, rows].reshape(-1, z.shape[-1])
        if iterations:
            weight = class_weight.float() if class_weight is not None else None
            return lbfgs_logistic(x.float(), y[rows].repeat(v), fitted_classes, c, weight, iterations, start)
        return lbfgs_logistic(x, y[rows].repeat(v), fitted_classes, c, class_weight)

    accuracy, macro, loss, tau = {}, {}, {}, 0.0
    log_prior = torch.log(counts / counts.sum()).float()
    if C is None:
        rng = np.random.default_rng(seed)
        items = np.arange(len(y))
        if len(items) > MAX_CV_ITEMS:
            items = np.sort(rng.choice(items, MAX_CV_ITEMS, replace=False))
        parts = folds_of(y[items].numpy(), folds, seed, None if groups is None else np.asarray(groups)[items])
        logits = regularisation_path(
            [(items[train], items[test]) for train, test in parts], grid, fit,
            lambda solution, rows: (z[0, rows].float() @ solution[0].T + solution[1]).numpy())
        truth = y[np.concatenate([items[test] for _, test in parts])].numpy() if parts else None
        C, tau, accuracy, macro, loss = choose_C_and_tau(logits, truth, log_prior.numpy(), fitted_classes,
                                                         criterion)
        if accuracy:
            info("linear head: cross-validated accuracy" + (" / macro-F1" if macro else "") + " by C: "
                 + ", ".join(f"{c:g}: {score:.4f}" + (f" / {macro[c]:.4f}" if macro else "")
                             for c, score in accuracy.items()) + f"; chose C={C:g}"
                 + (" (out-of-fold log-loss)" if macro else "")
                 + (f", logit adjustment {tau:g}" if tau else ""))
    weight, bias = fit(torch.arange(len(y)), C)
    bias = bias - (weight / std) @ mean - tau * log_prior.double()
    full_weight = torch.zeros(num_classes, weight.shape[1], dtype=weight.dtype)
    full_bias = torch.full((num_classes,), -1e4, dtype=bias.dtype)  # absent: never predicted
    full_weight[kept], full_bias[kept] = weight / std, bias
    grouped = groups is not None and bool(accuracy) and len(np.unique(np.asarray(groups)[items])) < len(items)
    return LinearFit(full_weight.float(), full_bias.float(), C, accuracy, macro, loss, time.time() - started,
                     grouped=grouped, logit_adjustment=tau)


def choose_C_and_tau(logits: dict[float, np.ndarray], truth, log_prior: np.ndarray, num_classes: int,
                     criterion: str) -> tuple[float, float, dict, dict, dict]:
    """(C, tau, accuracy by C, macro-F1 by C at that tau, log-loss by C) from the out-of-fold logits of each C.

    "accuracy" (the audit's heads): `pick_C` by accuracy, tau 0. "accuracy+macro_f1": C by the out-of-fold
    log-loss (smooth: one item of a tiny class cannot swing it), then the decision rule, tau, by accuracy +
    macro-F1 of argmax(logits - tau x log prior) at that C (ties: the smallest). Chosen on fashion-products'
    validation split against choosing C by accuracy + macro-F1 alone (tau 0) and against choosing (C, tau)
    together by that score: over 5 targets, C by log-loss then tau was better or level on 4 (articleType
    0.851 / 0.665 accuracy / macro-F1 against 0.845 / 0.657; baseColour 0.554 / 0.294 against 0.554 / 0.267),
    and 0.8 points lower on usage's macro-F1 (BENCHMARKS.md, issue 30)."""
    from catalens.metrics import macro_f1

    if not logits:
        return DEFAULT_C, 0.0, {}, {}, {}
    if criterion == "accuracy":
        accuracy = {c: float((values.argmax(1) == truth).mean()) for c, values in logits.items()}
        return pick_C(accuracy, DEFAULT_C), 0.0, accuracy, {}, {}
    target = torch.from_numpy(truth)
    loss = {c: float(F.cross_entropy(torch.from_numpy(values).double(), target)) for c, values in logits.items()}
    C = pick_C({c: -value for c, value in loss.items()}, DEFAULT_C)

    def scored(c: float, tau: float) -> tuple[float, float]:
        predicted = (logits[c] - tau * log_prior).argmax(1)
        return float((predicted == truth).mean()), macro_f1(truth, predicted, num_classes)

    at_C = {tau: scored(C, tau) for tau in TAU_GRID}
    best = max(sum(pair) for pair in at_C.values())
    tau = min(t for t, pair in at_C.items() if sum(pair) >= best - 1e-9)
    found = {c: scored(c, tau) for c in logits}
    return C, tau, {c: a for c, (a, _) in found.items()}, {c: m for c, (_, m) in found.items()}, loss


def sparse_logistic(x, y: np.ndarray, num_classes: int, C: float) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's multinomial LogisticRegression, each class weighted by its inverse frequency (on
    fashion-products' 75 unbalanced article types it raised the text head's test macro-F1 from 0.854 to 0.901, and
    its accuracy from 0.974 to 0.976); (weight, bias) over all classes (absent: never chosen)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fitted = LogisticRegression(C=C, max_iter=1000, class_weight="balanced").fit(x, y)
    weight = np.zeros((num_classes, x.shape[1]), np.float32)
    bias = np.full(num_classes, -1e4, np.float32)
    if len(fitted.classes_) == 2:  # binary: one row of coefficients for the second class
        weight[fitted.classes_[1]], bias[fitted.classes_[1]] = fitted.coef_[0], fitted.intercept_[0]
        bias[fitted.classes_[0]] = 0.0
    else:
        weight[fitted.classes_], bias[fitted.classes_] = fitted.coef_, fitted.intercept_
    return weight, bias


def choose_sparse_C(x, y: np.ndarray, num_classes: int, seed: int) -> tuple[float, dict]:
    """C by accuracy on a stratified fifth of the training rows held out (the smallest C among the best)."""
    from sklearn.model_selection import train_test_split

    counts = np.bincount(y, minlength=num_classes)
    if len(y) < 50 or (counts[counts > 0] < 2).all():
        return SPARSE_DEFAULT_C, {}
    strata = np.where(counts[y] >= 2, y, -1)
    fit_rows, held_rows = train_test_split(np.arange(len(y)), test_size=0.2, random_state=seed, stratify=strata)
    scores = {}
    for C in SPARSE_C_GRID:
        weight, bias = sparse_logistic(x[fit_rows], y[fit_rows], num_classes, C)
        scores[C] = float(((np.asarray(x[held_rows] @ weight.T) + bias).argmax(1) == y[held_rows]).mean())
    return pick_C(scores, SPARSE_DEFAULT_C), scores
