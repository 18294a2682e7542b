"""Distillation for the auto recipe: a slow, accurate teacher (the Lite0+Lite1+Lite2 mirror ensemble's head)
teaches a single-pass student (the Lite0 or Lite1 head) on the training photos, on features already cached by
both runs, so it costs seconds. The student's head is refitted (multinomial logistic regression, L-BFGS, the
student's own L2) on targets mixing the true label and the teacher's probabilities:

    target = alpha * one-hot(label) + (1 - alpha) * softmax(teacher logits)

alpha is chosen among `ALPHAS` by the cross-validated accuracy on the training split, and that cross-validation
is clean: in each fold the teacher's head is refitted without the held-out photos too, so neither teacher nor
student has seen them. The distilled model is the student's network with the new head: it predicts as fast as
the student."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from catalens.engine.calibrate import calibrate_head
from catalens.engine.train import evaluate_split
from catalens.models.linear_head import CV_ITERATIONS, DEFAULT_C, folds_of, lbfgs_logistic
from catalens.models.timm_models import linear_classifier_of
from catalens.progress import info
from catalens.rundir.layout import CARD_FILE, LAST_WEIGHTS_FILE, WEIGHTS_FILE
from catalens.rundir.run import Model, read_card, save_weights, write_json

ALPHAS = (0.0, 0.5)  # the true label's share of the target; 0: the teacher's probabilities alone
FOLDS = 5


def head_C(run: Path) -> float:
    head = read_card(run).training.get("head")
    return float(head.get("C", DEFAULT_C)) if isinstance(head, dict) else DEFAULT_C


def aligned(teacher, student) -> tuple[np.ndarray, np.ndarray]:
    """Positions in the teacher's and the student's cached training items of the photos both hold."""
    teacher_rows, student_rows = teacher.rows.numpy(), student.rows.numpy()
    where = {row: i for i, row in enumerate(teacher_rows)}
    pairs = [(where[row], j) for j, row in enumerate(student_rows) if row in where]
    return np.array([a for a, _ in pairs], np.int64), np.array([b for _, b in pairs], np.int64)


def soft_fit(x: torch.Tensor, targets: torch.Tensor, C: float, iterations: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Logistic regression on centred views (V, N, D) with soft targets (N, classes); weights for raw features."""
    views = x.shape[0]
    mean = x.reshape(-1, x.shape[-1]).mean(0)
    z = (x - mean).reshape(-1, x.shape[-1])
    weight, bias = lbfgs_logistic(z, targets.repeat(views, 1), targets.shape[1], C, iterations=iterations)
    return weight, bias - weight @ mean


def teacher_probabilities(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """The teacher's probabilities, averaged over its cached views."""
    return torch.stack([F.softmax(view @ weight.T + bias, dim=1) for view in x]).mean(0)


def distill(teacher_run: Path, teacher_features, student_run: Path, student_features, out: Path,
            num_classes: int, seed: int = 0) -> dict:
    """Write the distilled student to `out` (a run directory) and return {"cv_accuracy", "alpha", "C",
    "cv_by_alpha", "seconds", "validation"}."""
    started = time.time()
    teacher_train, student_train = teacher_features[0], student_features[0]
    t_index, s_index = aligned(teacher_train, student_train)
    tx = teacher_train.features[:, t_index].float()
    sx = student_train.features[:, s_index].float()
    labels = student_train.labels[s_index].long()
    hard = F.one_hot(labels, num_classes).float()
    teacher_C, student_C = head_C(teacher_run), head_C(student_run)

    scores = {alpha: 0 for alpha in ALPHAS}
    # the same grouping as the heads it competes with (products, near-identical photos kept in one fold)
    groups = getattr(student_train, "groups", None)
    parts = folds_of(labels.numpy(), FOLDS, seed, None if groups is None else np.asarray(groups)[s_index])
    for train_part, test_part in parts:
        train_part, test_part = torch.as_tensor(train_part), torch.as_tensor(test_part)
        weight, bias = soft_fit(tx[:, train_part], hard[train_part], teacher_C, CV_ITERATIONS)
        q = teacher_probabilities(tx[:, train_part], weight, bias)
        for alpha in ALPHAS:
            w, b = soft_fit(sx[:, train_part], alpha * hard[train_part] + (1 - alpha) * q, student_C, CV_ITERATIONS)
            scores[alpha] += int(((sx[0, test_part] @ w.T + b).argmax(1) == labels[test_part]).sum())
    held_out = max(1, sum(len(test) for _, test in parts))
    cv = {alpha: correct / held_out for alpha, correct in scores.items()}
    alpha = max(ALPHAS, key=lambda a: (cv[a], -ALPHAS.index(a)))

    teacher = Model.load(teacher_run, backend="torch", device="cpu")
    head = linear_classifier_of(teacher.network)
    q = teacher_probabilities(tx.double(), head.weight.detach().double(), head.bias.detach().double()).float()
    weight, bias = soft_fit(sx.double(), (alpha * hard + (1 - alpha) * q).double(), student_C, 300)

    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(student_run, out)
    student = Model.load(out, backend="torch", device="cpu")
    classifier = linear_classifier_of(student.network)
    with torch.no_grad():
        classifier.weight.copy_(weight.float())
        classifier.bias.copy_(bias.float())
    save_weights(student.module, out / WEIGHTS_FILE)
    shutil.copyfile(out / WEIGHTS_FILE, out / LAST_WEIGHTS_FILE)
    card = student.card
    val = student_features[1]
    card.validation = evaluate_split(classifier, val, lambda features: features, torch.device("cpu"),
                                     num_classes) if val is not None else {}
    card.calibration = calibrate_head(classifier, val, lambda features: features, torch.device("cpu"))
    card.training = dict(card.training, head={
        "method": f"distilled from {teacher.card.architecture}: multinomial logistic regression (L-BFGS) on "
                  "the student's features, targets alpha x label + (1 - alpha) x the teacher's probabilities",
        "teacher": teacher.card.architecture, "alpha": alpha, "C": student_C,
        "cv_accuracy": {str(a): round(score, 4) for a, score in cv.items()},
        "cv_how": "5 folds; in each, the teacher's head was refitted without the held-out photos"})
    write_json(out / CARD_FILE, card.to_dict())
    seconds = time.time() - started
    info(f"distilled {teacher.card.architecture} into {card.architecture}: cross-validated accuracy by alpha "
         + ", ".join(f"{a:g}: {score:.4f}" for a, score in cv.items()) + f"; chose alpha={alpha:g} ({seconds:.0f} s)")
    return {"cv_accuracy": cv[alpha], "alpha": alpha, "C": student_C, "cv_by_alpha": cv, "seconds": seconds,
            "validation": card.validation}
