"""Every PNG catalens draws, in one place: confusion matrices, grids of example images (mistakes, audit
suspects), calibration plots, training curves and a category tree's answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def figure_of(*args, **kwargs):
    """A new figure and its axes (pyplot's subplots) on the Agg backend. matplotlib is imported at the first plot,
    not by every command that might draw one: it was a tenth of each command's start."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


def save(figure, out: Path, dpi: int = 110) -> Path:
    figure.tight_layout()
    figure.savefig(out, dpi=dpi)
    import matplotlib.pyplot as plt

    plt.close(figure)
    return out


def plot_confusion(matrix: np.ndarray, classes: list[str], out: Path, normalize: bool) -> Path:
    values = matrix.astype(np.float64)
    if normalize:
        values = values / np.maximum(values.sum(axis=1, keepdims=True), 1)
    n = len(classes)
    size = max(5.0, min(0.55 * n + 2.5, 40))
    figure, axis = figure_of(figsize=(size, size * 0.85))
    image = axis.imshow(values, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04)
    if n <= 40:
        axis.set_xticks(range(n), classes, rotation=45, ha="right")
        axis.set_yticks(range(n), classes)
        threshold = values.max() / 2 if values.size else 0
        for i in range(n):
            for j in range(n):
                text = f"{values[i, j]:.2f}" if normalize else f"{int(matrix[i, j])}"
                axis.text(j, i, text, ha="center", va="center", fontsize=8,
                          color="white" if values[i, j] > threshold else "black")
    axis.set(xlabel="predicted", ylabel="true",
             title="confusion matrix" + (" (row-normalised: recall on the diagonal)" if normalize else " (counts)"))
    return save(figure, out)


def plot_examples(images: list, captions: list[str], out: Path, columns: int = 8, title: str | None = None,
                  cell: tuple[float, float] = (1.9, 2.2), dpi: int = 100) -> Path | None:
    """A grid of images (PIL) with captions such as 'true -> predicted (p)'."""
    if not images:
        return None
    rows = -(-len(images) // columns)
    figure, axes = figure_of(rows, columns, figsize=(columns * cell[0], rows * cell[1]), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, image, caption in zip(axes.flat, images, captions):
        axis.imshow(np.asarray(image), cmap="gray" if image.mode == "L" else None)
        axis.set_title(caption, fontsize=7)
    if title:
        figure.suptitle(title, fontsize=10)
    return save(figure, out, dpi=dpi)


def plot_reliability(before: list[dict], after: list[dict], out: Path) -> Path:
    """The reliability diagram: accuracy against mean confidence per equal-mass bin, before and after
    temperature scaling; a calibrated model lies on the diagonal."""
    figure, axis = figure_of(figsize=(5.5, 5.2))
    axis.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfectly calibrated")
    for bins, label, style in ((before, "uncalibrated", "o--"), (after, "calibrated", "s-")):
        if bins:
            axis.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], style, label=label)
    low = min([b["confidence"] for b in before + after] + [0.5])
    axis.set(xlim=(max(0.0, low - 0.05), 1.0), ylim=(max(0.0, low - 0.1), 1.0), xlabel="mean top probability (bin)",
             ylabel="accuracy (bin)", title="reliability (15 equal-mass bins)")
    axis.legend(loc="upper left")
    axis.grid(alpha=0.3)
    return save(figure, out)


def plot_risk_coverage(curve: dict, out: Path, marks: list[dict] | None = None) -> Path:
    """Accuracy of the answers kept against the share of items answered, when only answers whose probability
    reaches a threshold are given; `marks`: chosen thresholds (coverage, accuracy, label)."""
    figure, axis = figure_of(figsize=(6, 4.5))
    axis.plot(curve["coverage"], curve["accuracy"], "-", label="answers with probability >= threshold")
    for mark in marks or []:
        axis.plot([mark["coverage"]], [mark["accuracy"]], "o", label=mark["label"])
    axis.set(xlim=(0, 1.01), xlabel="coverage (share of items answered)", ylabel="accuracy of the answers",
             title="risk-coverage")
    axis.grid(alpha=0.3)
    axis.legend(loc="lower left", fontsize=8)
    return save(figure, out)


def plot_tree_answers(tree: dict, out: Path) -> Path:
    """A --targets run's tree under --min-confidence thresholds: stacked bars of the share of photos answered at
    each depth, with the accuracy of those answered above each bar (report/targets.py)."""
    figure, axis = figure_of(figsize=(7, 4))
    rows = tree["thresholds"]
    positions = np.arange(len(rows))
    bottom = np.zeros(len(rows))
    for level in tree["levels"]:
        share = np.array([row["levels"][level]["answered"] / max(1, row["items"]) for row in rows])
        axis.bar(positions, share, bottom=bottom, label=f"answered at {level}")
        bottom += share
    for x, row in zip(positions, rows):
        axis.text(x, min(bottom[x] + 0.02, 1.03), f"{row['accuracy_answered']:.1%} right", ha="center", fontsize=8)
    axis.set_xticks(positions, [f"{row['threshold']:g}" for row in rows])
    axis.set(xlabel="--min-confidence", ylabel="share of photos", ylim=(0, 1.1), title="answers up the category tree")
    axis.legend(loc="lower left", fontsize=8)
    return save(figure, out)


def plot_history(history_csv: Path, out: Path) -> Path | None:
    """Loss and accuracy per epoch, train and validation, from a run's history.csv."""
    history = pd.read_csv(history_csv)
    if history.empty:
        return None
    figure, (loss_axis, accuracy_axis) = figure_of(1, 2, figsize=(11, 4))
    loss_axis.plot(history["epoch"], history["train_loss"], marker="o", label="train")
    accuracy_axis.plot(history["epoch"], history["train_accuracy"], marker="o", label="train")
    if history["val_loss"].notna().any():
        loss_axis.plot(history["epoch"], history["val_loss"], marker="o", label="validation")
        accuracy_axis.plot(history["epoch"], history["val_accuracy"], marker="o", label="validation")
    loss_axis.set(title="loss", xlabel="epoch")
    accuracy_axis.set(title="accuracy", xlabel="epoch")
    for axis in (loss_axis, accuracy_axis):
        axis.grid(alpha=0.3)
        axis.legend()
    return save(figure, out)
