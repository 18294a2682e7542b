"""After training: temperature scaling of the best weights on the validation split, kept in the run's model card
(models/calibration.py holds the arithmetic; rundir/run.py's Model applies the temperature)."""

from __future__ import annotations

import numpy as np
import torch

from catalens.models.calibration import calibration_summary, fit_temperature, uncalibrated
from catalens.progress import info


def split_logits(net, batches, to_inputs, device) -> tuple[np.ndarray, np.ndarray]:
    """The network's logits and the labels of every labelled row of `batches` (images or cached features)."""
    net.eval()
    logits, labels = [], []
    with torch.inference_mode():
        for batch in batches:
            if len(batch.labels):
                logits.append(net(to_inputs(batch.images.to(device, non_blocking=True))).float().cpu().numpy())
                labels.append(batch.labels.numpy())
    net.train()
    if not labels:
        return np.zeros((0, 0), np.float32), np.zeros(0, np.int64)
    return np.concatenate(logits), np.concatenate(labels)


def calibrate_head(net, batches, to_inputs, device) -> dict:
    """One temperature for the image head, fitted on the validation rows; the card's calibration entry."""
    if batches is None:
        return uncalibrated()
    logits, labels = split_logits(net, batches, to_inputs, device)
    if len(labels) < 2:
        return uncalibrated()
    temperature = fit_temperature(logits, labels)
    return {"temperature": round(temperature, 6), **calibration_summary(logits, logits / temperature, labels)}


def calibrate_text_heads(raw: dict[str, np.ndarray], labels: np.ndarray, has_text: np.ndarray) -> dict:
    """A --text model: one temperature per head (image, text, fused), each fitted on its own validation
    logits; the summary is that of the answers the model gives (fused where a row has text, else image)."""
    if len(labels) < 2:
        return uncalibrated()
    temperatures = {name: round(fit_temperature(raw[name], labels), 6) for name in ("image", "text", "fused")}
    calibrated = np.where(has_text[:, None], raw["fused"] / temperatures["fused"], raw["image"] / temperatures["image"])
    return {"temperature": temperatures["image"], "temperatures": temperatures,
            **calibration_summary(raw["used"], calibrated, labels)}


def describe(calibration: dict) -> str:
    """One line for the console."""
    if calibration.get("status") != "calibrated":
        return f"probabilities: {calibration.get('reason', 'uncalibrated')}"
    temperatures = calibration.get("temperatures") or {"": calibration["temperature"]}
    shown = ", ".join(f"{name} {value:.3f}".strip() for name, value in temperatures.items())
    line = (f"calibration on {calibration['items']:,} validation items: temperature {shown}; ECE "
            f"{calibration['ece_uncalibrated']:.4f} -> {calibration['ece']:.4f}, NLL "
            f"{calibration['nll_uncalibrated']:.4f} -> {calibration['nll']:.4f}")
    for target, point in calibration.get("targets", {}).items():
        if point:
            line += (f"; {float(target):.0%} accuracy answering {point['coverage']:.0%} "
                     f"(threshold {point['threshold']:.3f})")
    return line


def report_calibration(calibration: dict) -> None:
    info(describe(calibration))
