"""Single-image latency and batch throughput of pretrained-size backbones on CPU: PyTorch eager against
onnxruntime on the file `catalens export` writes, in the same run. Target (issue 3): onnxruntime >= 1.5x faster
at batch 1 (224 px, 2 cores). Weights do not change speed, so the networks are freshly initialised.

    python bench/latency.py --models tf_efficientnet_lite0 mobilenetv2_100 resnet50 --record
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch
from common import record, timings

from catalens.models import create_model
from catalens.models.onnx_backend import export_onnx
from catalens.models.timm_models import timm_preprocessing


def measure(name: str, batch: int) -> dict:
    size = timm_preprocessing(name)["input_size"]
    module = create_model(name, num_classes=10).eval()
    card = {"architecture": f"timm:{name}", "classes": [str(i) for i in range(10)],
            "preprocessing": {"input_size": list(size), "channels": 3}}
    path = Path(tempfile.mkdtemp()) / "model.onnx"
    runner, difference = export_onnx(module, card, path)
    eager = module.to(memory_format=torch.channels_last)
    results = {"model": name, "size": size[0], "max_abs_difference": difference}
    for n in (1, batch):
        images = torch.randn(n, 3, *size)
        last = images.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            torch_times = timings(lambda last=last: eager(last))
        onnx_times = timings(lambda images=images: runner.run(images.numpy()))
        results[n] = {"torch_ms": 1000 * statistics.median(torch_times) / n,
                      "onnx_ms": 1000 * statistics.median(onnx_times) / n}
    results["batch"] = batch
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["tf_efficientnet_lite0"])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    rows = []
    for name in args.models:
        r = measure(name, args.batch)
        one, many = r[1], r[args.batch]
        rows.append(
            f"{name} at {r['size']} px, {torch.get_num_threads()} threads: batch 1 latency torch eager "
            f"{one['torch_ms']:.1f} ms, onnxruntime {one['onnx_ms']:.1f} ms "
            f"(**{one['torch_ms'] / one['onnx_ms']:.2f}x**); "
            f"batch {args.batch} throughput torch {1000 / many['torch_ms']:.0f} images/s, onnxruntime "
            f"{1000 / many['onnx_ms']:.0f} images/s ({many['torch_ms'] / many['onnx_ms']:.2f}x); export max abs "
            f"difference {r['max_abs_difference']:.1e}")
        print(rows[-1])
    if args.record:
        record(rows)


if __name__ == "__main__":
    main()
