"""Where a `catalens serve` prediction's milliseconds go, before and after issue 16's latency work, in one run.

Stages, timed in-process on the clothing-small validation photos with a Lite0 run (median ms per image):
- decode: before, JPEG draft to 512 px; after, draft to the smallest DCT scale that covers the model's resize;
- resize: before, resize to 256 px shorter side then centre crop 224; after, one resize of the crop's box;
- model: onnxruntime, batch 1 (unchanged);
- history: before, the thumbnail and a one-row transaction on the request path; after, an id and a queue put
  (the thumbnail and batched insert run on the writer thread).
Then the end-to-end server p50/p99 at concurrency 1 of the current tree and, with `--before-tree`, of an older
checkout (its code imported through PYTHONPATH), each over `--seconds`; the rest (HTTP, multipart, JSON) is the
server p50 minus the stages. Also: top-1 agreement of the before and after decode+resize on every validation photo.

    git worktree add /tmp/before 558f4e1
    python bench/serve_breakdown.py --model runs/lite0 --before-tree /tmp/before --record
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from common import SHARED, publish
from PIL import Image
from serve import lite0_run
from serve import run as serve_run

from catalens.apps.serve.history import History, predictions, thumbnail
from catalens.apps.serve.inputs import decode_upload
from catalens.rundir.run import Model

MAX_BYTES, MAX_PIXELS = 10_000_000, 40_000_000


def resize_before(preprocessing, image: Image.Image) -> torch.Tensor:
    """Preprocessing.prepare as it was at 558f4e1: resize the whole image, then crop."""
    image = image.convert("RGB")
    height, width = preprocessing.input_size
    method = Image.Resampling.BICUBIC if preprocessing.interpolation == "bicubic" else Image.Resampling.BILINEAR
    scale = max(width / image.width, height / image.height) / preprocessing.crop_pct
    resized = (max(width, round(image.width * scale)), max(height, round(image.height * scale)))
    image = image.resize(resized, method, reducing_gap=3.0)
    left, top = (resized[0] - width) // 2, (resized[1] - height) // 2
    image = image.crop((left, top, left + width, top + height))
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)


def history_before(history: History, image: Image.Image, top: list[dict], row_id: int) -> None:
    """History.add as it was at 558f4e1: the thumbnail and a one-row transaction, on the request path."""
    row = {"id": row_id, "created_at": datetime.now(timezone.utc), "filename": "photo.jpg", "model": "m",
           "label": top[0]["label"], "probability": top[0]["probability"], "top_k": json.dumps(top), "images": 1,
           "thumbnail": thumbnail(image), "original": None}
    with history.engine.begin() as connection:
        connection.execute(predictions.insert().values(**row))


def median_ms(function, items, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        for item in items:
            started = time.perf_counter()
            function(item)
            times.append(1000 * (time.perf_counter() - started))
    return statistics.median(times)


def top1(model: Model, tensors: list[torch.Tensor]) -> np.ndarray:
    return np.concatenate([model.probabilities(torch.stack(tensors[i:i + 32])).argmax(axis=1)
                           for i in range(0, len(tensors), 32)])


def stages(model: Model, photos: list[bytes]) -> tuple[dict, dict, tuple[int, int]]:
    pre = model.preprocessing
    before_images = [decode_upload(data, "p", MAX_BYTES, MAX_PIXELS) for data in photos]
    after_images = [decode_upload(data, "p", MAX_BYTES, MAX_PIXELS, pre) for data in photos]
    one = pre.prepare(after_images[0])[None]
    top = [{"label": model.classes[0], "probability": 0.5}]
    folder = Path(tempfile.mkdtemp(prefix="catalens-breakdown-"))
    old, new = History(f"sqlite:///{folder / 'before.db'}"), History(f"sqlite:///{folder / 'after.db'}")
    ids = iter(range(1, 10**9))
    before = {
        "decode": median_ms(lambda data: decode_upload(data, "p", MAX_BYTES, MAX_PIXELS), photos),
        "resize": median_ms(lambda image: resize_before(pre, image), before_images),
        "model": median_ms(lambda _: model.probabilities(one), range(100)),
        "history": median_ms(lambda image: history_before(old, image, top, next(ids)), before_images[:100], 1),
    }
    after = {
        "decode": median_ms(lambda data: decode_upload(data, "p", MAX_BYTES, MAX_PIXELS, pre), photos),
        "resize": median_ms(pre.prepare, after_images),
        "model": before["model"],
        "history": median_ms(lambda image: new.add("photo.jpg", "m", top, image), after_images[:100], 1),
    }
    new.close(), old.close()
    old_top = top1(model, [resize_before(pre, image) for image in before_images])
    new_top = top1(model, [pre.prepare(image) for image in after_images])
    return before, after, (int((old_top == new_top).sum()), len(photos))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="A Lite0 run directory [default: train a head on 300 photos].")
    parser.add_argument("--before-tree", type=Path, help="A checkout of the code before (git worktree).")
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    clothing = SHARED / "clothing-small"
    model_dir = lite0_run(args.model)
    model = Model.load(model_dir, backend="onnx")
    photos = [path.read_bytes() for path in sorted((clothing / "validation").rglob("*.jpg"))]
    sizes = {Image.open(io.BytesIO(data)).size for data in photos[:50]}
    before, after, (same, total) = stages(model, photos)
    served = {}
    backend = ["--backend", "onnx"]
    if args.before_tree:
        current = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = str(args.before_tree.resolve())
        served["before"] = serve_run(model_dir, photos[:64], 1, args.seconds, *backend)
        if current is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = current
    served["after"] = serve_run(model_dir, photos[:64], 1, args.seconds, *backend)
    rows = []
    for name, timing in (("before", before), ("after", after)):
        text = ", ".join(f"{stage} {ms:.2f}" for stage, ms in timing.items())
        if name in served:
            result = served[name]
            rest = result["p50"] - sum(timing.values())
            text += (f", rest (HTTP, multipart, JSON) {rest:.2f}; server p50 **{result['p50']:.1f} ms**, p99 "
                     f"**{result['p99']:.1f} ms** ({result['requests']} requests; client p50 "
                     f"{result['client_p50']:.1f} ms)")
        rows.append(f"{name} (ms per image, medians): {text}")
    rows.append(f"top-1 of the after decode+resize equals the before one on **{same}/{total}** clothing-small "
                f"validation photos ({sorted(sizes)[:3]} px, {model_dir.name}); model {model_dir}")
    publish(rows, args.record)


if __name__ == "__main__":
    os.environ.setdefault("CATALENS_NO_PROGRESS", "1")
    main()
