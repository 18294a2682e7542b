"""After training: temperature scaling of the best weights on the validation split, kept in the run's model card
(models/calibration.py holds the arithmetic; rundir/run.py's Model applies the temperature)."""

from __future__ import annotations

import numpy as np
import torch

from catalens.loading.preprocess import softmax_numpy
from catalens.models.calibration import (
    apply_top_label_map,
    calibration_summary,
    choose_top_label_map,
    fit_temperature,
    uncalibrated,
)
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
    """One temperature for the image head, fitted on the validation rows, and a top-label map when it calibrates
    better out of fold (models/calibration.py); the card's calibration entry."""
    if batches is None:
        return uncalibrated()
    logits, labels = split_logits(net, batches, to_inputs, device)
    if len(labels) < 2:
        return uncalibrated()
    temperature = fit_temperature(logits, labels)
    return finish(logits, softmax_numpy(logits / temperature), labels, {"temperature": round(temperature, 6)},
                  refit=logits)


def calibrate_text_heads(raw: dict[str, np.ndarray], labels: np.ndarray, has_text: np.ndarray) -> dict:
    """A --text model: one temperature per head (image, text, fused), each fitted on its own validation
    logits; the summary (and the top-label map) is that of the answers the model gives (fused where a row has
    text, else image)."""
    if len(labels) < 2:
        return uncalibrated()
    with_text = has_text if has_text.sum() >= 2 else np.ones(len(labels), bool)  # the rows text heads answer
    temperatures = {"image": round(fit_temperature(raw["image"], labels), 6),
                    **{name: round(fit_temperature(raw[name][with_text], labels[with_text]), 6)
                       for name in ("text", "fused")}}
    calibrated = np.where(has_text[:, None], raw["fused"] / temperatures["fused"], raw["image"] / temperatures["image"])
    # no top-label map: it would be fitted on the fused answers and also apply where the image head answers alone
    return finish(raw["used"], softmax_numpy(calibrated), labels,
                  {"temperature": temperatures["image"], "temperatures": temperatures}, allow_map=False)


def finish(logits: np.ndarray, scaled: np.ndarray, labels: np.ndarray, temperatures: dict,
           refit: np.ndarray | None = None, allow_map: bool = True) -> dict:
    """The card's entry: temperatures, the top-label map if cross-validation on validation prefers it, and the
    summary of the calibrated validation probabilities (with the out-of-fold ECE of the chosen method: the
    in-sample one flatters a map fitted on the same rows)."""
    mapping, scores = choose_top_label_map(scaled, labels, logits=refit) if allow_map else (None, {})
    method = "temperature scaling fitted on the validation split (NLL)" + (
        ", then a top-label isotonic map (chosen by out-of-fold ECE on validation)" if mapping else "")
    chosen = "temperature + top-label isotonic" if mapping else "temperature"
    return {**temperatures, "top_label_map": mapping, "method": method, "choice_out_of_fold_ece": scores,
            "ece_out_of_fold": scores.get(chosen),
            **calibration_summary(logits, apply_top_label_map(scaled, mapping), labels)}


def describe(calibration: dict) -> str:
    """One line for the console."""
    if calibration.get("status") != "calibrated":
        return f"probabilities: uncalibrated ({calibration.get('reason', 'no validation split')})"
    temperatures = calibration.get("temperatures") or {"": calibration["temperature"]}
    shown = ", ".join(f"{name} {value:.3f}".strip() for name, value in temperatures.items())
    line = (f"calibration on {calibration['items']:,} validation items: temperature {shown}; ECE "
            f"{calibration['ece_uncalibrated']:.4f} -> {calibration['ece']:.4f}"
            + (f" ({calibration['ece_out_of_fold']:.4f} out of fold)" if calibration.get("ece_out_of_fold") else "")
            + ", NLL "
            f"{calibration['nll_uncalibrated']:.4f} -> {calibration['nll']:.4f}"
            + (" (with a top-label isotonic map)" if calibration.get("top_label_map") else ""))
    for target, point in calibration.get("targets", {}).items():
        if point:
            line += (f"; {float(target):.0%} accuracy answering {point['coverage']:.0%} "
                     f"(threshold {point['threshold']:.3f})")
    return line


def report_calibration(calibration: dict) -> None:
    info(describe(calibration))
