"""Beyond one process (issue 17), measured on this machine in one run:

1. DDP: `catalens train --nproc 2` (2 gloo processes) against 1 process at the same global batch, seed and epochs,
   fastcnn on Fashion-MNIST: test accuracy of each (target: equal within noise) and the ratio of images/s
   (on 2 cores no speed-up is expected; the point is correctness).
2. Ray Data: `catalens predict --engine ray` on a local 2-CPU Ray against the local engine on the same 10,000
   Fashion-MNIST test images (and on the 3,409 real clothing-small photos with a Lite0 run when `--lite0 RUN`):
   images/s of each, Ray's start-up, and the number of images whose top-1 differs (target: 0).

    python bench/scale.py --epochs 3 --lite0 /tmp/bench-lite0 --record
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from common import FASHION, SHARED, catalens, publish

from catalens.inference.predict import predict


def train_run(nproc: int, epochs: int, root: Path) -> dict:
    out = root / f"fastcnn-{nproc}p"
    shutil.rmtree(out, ignore_errors=True)
    seconds = catalens("train", "--nproc", str(nproc), "--data", FASHION, "--model", "fastcnn", "--epochs",
                       str(epochs), "--batch-size", "256", "--seed", "0", "--out", str(out))
    catalens("evaluate", str(out), "--data", FASHION, "--out", str(out / "eval"))
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    rows = list(csv.DictReader((out / "history.csv").open()))
    speed = sum(float(row["images_per_s"]) for row in rows) / len(rows)
    return {"nproc": nproc, "accuracy": metrics["accuracy"], "images_per_s": speed, "wall_s": seconds, "out": out}


def top1(text: str) -> list[str]:
    return [row["label"] for row in csv.DictReader(io.StringIO(text))]


def predict_both(model: Path, data: str, root: Path, split: str | None) -> dict:
    local, ray = root / "local.csv", root / "ray.csv"
    started = time.perf_counter()  # wall time of the whole call: catalog, model, decoding, writing
    a = predict(model, [data], out=local, split=split)
    local_s = time.perf_counter() - started
    started = time.perf_counter()
    b = predict(model, [data], out=ray, split=split, engine="ray")
    ray_s = time.perf_counter() - started
    left, right = top1(local.read_text()), top1(ray.read_text())
    differ = sum(x != y for x, y in zip(left, right)) + abs(len(left) - len(right))
    return {"images": a["predicted"], "local_ips": a["predicted"] / local_s, "local_s": local_s,
            "ray_ips": b["predicted"] / ray_s, "ray_s": ray_s, "startup_s": b["startup_s"],
            "differ": differ, "identical_file": local.read_text() == ray.read_text()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lite0", type=Path, help="A Lite0 run directory: also predict clothing-small with it.")
    parser.add_argument("--skip-ddp", action="store_true")
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="catalens-scale-"))
    rows = []
    model = None
    if not args.skip_ddp:
        one, two = train_run(1, args.epochs, root), train_run(2, args.epochs, root)
        model = one["out"]
        rows.append(f"DDP, fastcnn on Fashion-MNIST, {args.epochs} epochs, global batch 256, seed 0: test accuracy "
                    f"1 process **{one['accuracy']:.4f}**, 2 gloo processes **{two['accuracy']:.4f}** "
                    f"(difference {two['accuracy'] - one['accuracy']:+.4f}); training images/s "
                    f"{one['images_per_s']:,.0f} vs {two['images_per_s']:,.0f} = "
                    f"**{two['images_per_s'] / one['images_per_s']:.2f}x** on "
                    f"{os.cpu_count()} cores; wall {one['wall_s']:.0f} s vs {two['wall_s']:.0f} s (torchrun start-up "
                    "included)")
    else:
        model = root / "fastcnn-1p"
        catalens("train", "--data", FASHION, "--model", "fastcnn", "--epochs", "1", "--out", str(model))
    started = time.perf_counter()
    fm = predict_both(model, FASHION, root / "fm", split="test")
    rows.append(f"Ray Data predict, local Ray with {os.cpu_count()} CPUs, {fm['images']:,} Fashion-MNIST test images, "
                f"fastcnn: local engine {fm['local_ips']:,.0f} images/s ({fm['local_s']:.1f} s), Ray "
                f"{fm['ray_ips']:,.0f} images/s ({fm['ray_s']:.1f} s, of which Ray start-up {fm['startup_s']:.1f} s) = "
                f"**{fm['ray_ips'] / fm['local_ips']:.2f}x**; top-1 differs on **{fm['differ']}** images; output "
                f"file {'identical' if fm['identical_file'] else 'different'}")
    if args.lite0:
        photos = predict_both(args.lite0, str(SHARED / "clothing-small"), root / "photos", split=None)
        rows.append(f"Ray Data predict, the same local Ray, {photos['images']:,} real clothing-small photos, Lite0 "
                    f"head at 224 px (onnxruntime): local {photos['local_ips']:,.0f} images/s "
                    f"({photos['local_s']:.1f} s), "
                    f"Ray {photos['ray_ips']:,.0f} images/s ({photos['ray_s']:.1f} s, start-up "
                    f"{photos['startup_s']:.1f} s) = **{photos['ray_ips'] / photos['local_ips']:.2f}x**; top-1 "
                    f"differs on **{photos['differ']}**; output file "
                    f"{'identical' if photos['identical_file'] else 'different'}")
    print(f"(predictions took {time.perf_counter() - started:.0f} s)")
    publish(rows, args.record)


if __name__ == "__main__":
    os.environ.setdefault("CATALENS_NO_PROGRESS", "1")
    main()
