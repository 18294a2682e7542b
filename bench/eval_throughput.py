"""End-to-end evaluation speed on the 10,000 Fashion-MNIST test images (target: >= 10,000 images/s on 2 CPU
cores for the default model), onnxruntime backend against PyTorch eager in the same run.

"pipeline" is what `catalens evaluate` measures around its prediction loop: batching the in-memory test set,
preprocessing, inference, softmax. "command" is the wall time of the whole `catalens evaluate` process
(Python start-up, imports, reading the IDX files, metrics, plots and the latency measurement included).

    python bench/eval_throughput.py RUN_DIR [RUN_DIR ...] --record
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import FASHION, catalens, record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="run directories (e.g. bench/out/fastcnn-classes-12ep)")
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    rows = []
    print("| model | backend | pipeline images/s | command wall s | latency ms (batch 1) | model throughput img/s |")
    print("|---|---|---|---|---|---|")
    for run in args.runs:
        for backend in ("onnx", "torch"):
            out = run / f"eval-speed-{backend}"
            wall = catalens("evaluate", str(run), "--data", FASHION, "--backend", backend, "--out", str(out))
            metrics = json.loads((out / "metrics.json").read_text())
            line = (f"{metrics['architecture']} | {backend} | {metrics['evaluation_images_per_s']:,.0f} | {wall:.1f} | "
                    f"{metrics['latency_ms_batch1']:.2f} | {metrics['throughput_images_per_s']:,.0f}")
            print(f"| {line} |")
            rows.append(f"{metrics['architecture']}, {backend} backend: evaluate pipeline "
                        f"**{metrics['evaluation_images_per_s']:,.0f} images/s** over {metrics['items']:,} "
                        "test images; "
                        f"whole command {wall:.1f} s; latency {metrics['latency_ms_batch1']:.2f} ms at batch 1; "
                        f"model-only {metrics['throughput_images_per_s']:,.0f} images/s at batch "
                        f"{metrics['throughput_batch_size']}")
    if args.record:
        record(rows)


if __name__ == "__main__":
    main()
