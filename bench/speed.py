"""float32 against int8 on CPU (issue 26), on real clothing photos, in one run.

For the Lite0 head, the Lite1 head and the auto recipe's model (by default the run bench/transfer.py
--speed-target trained; trained here if missing): `catalens export RUN --int8` (calibrated on 200 training photos,
checked on the run's validation split, which gives the validation accuracy of each), then for float32 and int8:
- the network alone (onnxruntime, preprocessed photos): photos/s at batch 1 and at batch 32;
- `catalens sort` of 1,000 real ~400x533 JPEGs end to end (copy mode: decode, resize, predict, place);
- `catalens serve` at concurrency 1 from a second process (bench/serve.py's load generator): server p50 / p99.

Targets: sort >= 250 photos/s with the Lite0 filter at 224 px, serve p50 <= 7 ms, accuracy within 0.5 points.

    python bench/speed.py --record
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
from pathlib import Path

import numpy as np
import torch
from common import REPO, SHARED, catalens, copy_photos, record, timings
from serve import run as serve_run

from catalens.apps.sort import sort_folder
from catalens.data import DataOptions, load_catalog
from catalens.loading.preprocess import normalize_numpy
from catalens.models.onnx_backend import OnnxRunner
from catalens.rundir.layout import INT8_FILE
from catalens.rundir.run import Model, export_model

OUT = REPO / "bench" / "out"
DATA = SHARED / "clothing-small"
HEAD = ["--pretrained", "--freeze", "backbone"]


def trained(name: str, args: list[str], data: str = str(DATA)) -> Path:
    run = OUT / f"speed-{name}"
    if not (run / "model.safetensors").is_file():
        shutil.rmtree(run, ignore_errors=True)
        catalens("train", "--data", data, *args, "--out", str(run))
    return run


def timed(function, seconds: float = 4.0) -> float:
    """Median seconds of one call."""
    return statistics.median(timings(function, seconds))


def network_speed(path: Path, photos: np.ndarray) -> dict:
    runner = OnnxRunner(path, spin=True)
    return {"batch1": 1 / timed(lambda: runner.run(photos[:1])), "batch32": 32 / timed(lambda: runner.run(photos[:32]))}


def sort_speed(run: Path, int8: bool, photos: Path) -> float:
    model = Model.load(run, int8=int8)
    assert model.backend == ("onnx-int8" if int8 else "onnx"), model.backend
    out = OUT / "speed-sorted"
    shutil.rmtree(out, ignore_errors=True)
    return sort_folder(model, photos, out, show_progress=False).images_per_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--auto", type=Path, default=OUT / "transfer-speed-auto",
                        help="The auto recipe's run [default: bench/transfer.py --speed-target's].")
    parser.add_argument("--sort-photos", type=int, default=1000)
    parser.add_argument("--serve-seconds", type=float, default=20)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    runs = {"lite0": trained("lite0", ["--model", "tf_efficientnet_lite0", *HEAD]),
            "lite1": trained("lite1", ["--model", "tf_efficientnet_lite1", *HEAD]),
            "auto": args.auto if (args.auto / "model.safetensors").is_file() else trained("auto", [])}
    photos = copy_photos(DATA / "train", OUT / "speed-photos", args.sort_photos)
    served = [path.read_bytes() for path in sorted((DATA / "validation").rglob("*.jpg"))]
    val = load_catalog(str(DATA), DataOptions()).split("val")
    rows = []
    for name, run in runs.items():
        catalens("export", str(run), "--int8")
        card = json.loads((run / "model_card.json").read_text())
        check = card["int8"]
        files = {"float32": OUT / f"speed-{name}.onnx", "int8": OUT / f"speed-{name}-int8.onnx"}
        export_model(run, files["float32"])
        model = Model.load(run, int8=False)
        images = torch.stack([model.preprocessing.prepare(val.reader.read(ref)) for ref in val.table["ref"][:32]])
        inputs = normalize_numpy(images.numpy(), model.preprocessing)
        result = {}
        for precision in ("float32", "int8"):
            if precision == "int8":
                if check["status"] != "used":
                    result[precision] = None
                    continue
                shutil.copyfile(run / INT8_FILE, files["int8"])
            network = network_speed(files[precision], inputs)
            sort = sort_speed(run, precision == "int8", photos)
            serve = serve_run(files[precision], served, 1, args.serve_seconds)
            result[precision] = {**network, "sort": sort, "p50": serve["p50"], "p99": serve["p99"],
                                 "requests": serve["requests"]}
            print(name, precision, result[precision], flush=True)
        size = card["preprocessing"]["input_size"][0]
        parts = []
        for precision, r in result.items():
            if r is None:
                parts.append(f"{precision}: not used ({check['why']})")
                continue
            accuracy = check["float32_accuracy"] if precision == "float32" else check["int8_accuracy"]
            parts.append(f"{precision}: validation accuracy **{accuracy:.4f}**, network {r['batch1']:.0f} photos/s at "
                         f"batch 1 and {r['batch32']:.0f} at 32, sort {args.sort_photos} photos **{r['sort']:.0f} "
                         f"photos/s**, serve p50 **{r['p50']:.1f} ms** / p99 {r['p99']:.1f} ms ({r['requests']} "
                         "requests)")
        rows.append(f"{name} ({card['architecture']}, {size} px; int8 {check['status']}, agreement "
                    f"{check.get('agreement', 0):.1%} on {check.get('validation_photos', 0)} validation photos): "
                    + "; ".join(parts))
        print(rows[-1], flush=True)
    if args.record:
        record(rows)


if __name__ == "__main__":
    main()
