"""`catalens demo`: train the default model on Fashion-MNIST for a few minutes, evaluate it on the test set."""

from __future__ import annotations

from pathlib import Path

from catalens.engine.train import train
from catalens.progress import info
from catalens.report.evaluate import evaluate
from catalens.rundir.layout import CHECKPOINT_FILE, CURVES_FILE

DEMO_EPOCHS = 4


def run_demo(out: str | Path = "runs/demo", epochs: int = DEMO_EPOCHS, data: str = "fashion-mnist") -> dict:
    out = Path(out)
    resume = (out / CHECKPOINT_FILE).is_file()
    info(f"catalens demo: training the default model on {data} for {epochs} epochs (a few minutes on 2 cores)")
    train(data=data, out=str(out), epochs=epochs, resume=resume)
    metrics = evaluate(out, data=data, out=out / "eval")
    info(f"test accuracy {metrics['accuracy']:.2%}. Report: {out / 'eval' / 'report.md'}; "
         f"training curves: {out / CURVES_FILE}")
    return metrics
