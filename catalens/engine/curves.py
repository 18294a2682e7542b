"""Training curves (loss and accuracy per epoch, train and validation) as a PNG beside history.csv."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def plot_history(history_csv: Path, out: Path) -> Path | None:
    history = pd.read_csv(history_csv)
    if history.empty:
        return None
    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(11, 4))
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
    figure.tight_layout()
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return out
