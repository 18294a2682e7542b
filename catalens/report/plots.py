"""PNG plots people would rather look at than read: confusion matrices, mistakes (training curves:
engine/curves.py)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_confusion(matrix: np.ndarray, classes: list[str], out: Path, normalize: bool) -> Path:
    values = matrix.astype(np.float64)
    if normalize:
        values = values / np.maximum(values.sum(axis=1, keepdims=True), 1)
    n = len(classes)
    size = max(5.0, min(0.55 * n + 2.5, 40))
    figure, axis = plt.subplots(figsize=(size, size * 0.85))
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
    figure.tight_layout()
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return out


def plot_examples(images: list, captions: list[str], out: Path, columns: int = 8) -> Path | None:
    """A grid of images (PIL) with captions such as 'true -> predicted (p)'."""
    if not images:
        return None
    rows = -(-len(images) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(columns * 1.9, rows * 2.2), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, image, caption in zip(axes.flat, images, captions):
        axis.imshow(np.asarray(image), cmap="gray" if image.mode == "L" else None)
        axis.set_title(caption, fontsize=7)
    figure.tight_layout()
    figure.savefig(out, dpi=100)
    plt.close(figure)
    return out
