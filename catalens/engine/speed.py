"""How fast a trained run predicts on this machine, end to end: read and decode each photo, resize it, run the
model as predict, sort and serve load it (onnxruntime on CPU, the int8 network when the card says so). Measured in
one process, so the numbers compare candidates on equal terms; `catalens sort` decodes in worker processes beside
the model and is faster than the batch number here (BENCHMARKS.md).

- serve: one photo per call (batch 1), the median over the photos, the model loaded as serve loads it;
- sort: `SORT_BATCH` photos per call, decoding included.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch

from catalens.data.catalog import Catalog
from catalens.progress import info
from catalens.rundir.run import Model

SORT_BATCH = 64  # catalens sort's default --batch-size
SERVE_PHOTOS = 16  # single-photo calls timed for the serve number


def measure_speed(run: str | Path, catalog: Catalog, photos: int = SORT_BATCH) -> dict:
    """{"sort_photos_per_s", "serve_photos_per_s", "serve_ms_p50", "photos", "backend"} for the run at `run`,
    on the first `photos` readable photos of `catalog`."""
    model = Model.load(run)
    refs = list(catalog.table["ref"][: photos + 8])

    def prepared(ref) -> torch.Tensor | None:
        try:
            return model.preprocessing.prepare(catalog.reader.read(ref))
        except Exception:  # noqa: BLE001 - an unreadable photo is not timed (training already listed it)
            return None

    warm = [image for image in map(prepared, refs[:2]) if image is not None]
    if warm:
        model.probabilities(torch.stack(warm))  # the first call builds onnxruntime's kernels
    started, images = time.perf_counter(), []
    for ref in refs[:photos]:
        image = prepared(ref)
        if image is not None:
            images.append(image)
    if not images:
        return {}
    for start in range(0, len(images), SORT_BATCH):
        model.probabilities(torch.stack(images[start:start + SORT_BATCH]))
    sort_rate = len(images) / (time.perf_counter() - started)
    model = Model.load(run, latency=True)  # as serve loads it: onnxruntime's threads busy-wait between operators
    if warm:
        model.probabilities(warm[0][None])
    single = []
    for ref in refs[:SERVE_PHOTOS]:
        began = time.perf_counter()
        image = prepared(ref)
        if image is not None:
            model.probabilities(image[None])
            single.append(time.perf_counter() - began)
    p50 = statistics.median(single) if single else 0.0
    result = {"sort_photos_per_s": round(sort_rate, 1), "serve_photos_per_s": round(1 / p50, 1) if p50 else 0.0,
              "serve_ms_p50": round(1000 * p50, 2), "photos": len(images), "backend": model.backend}
    info(f"  speed of {model.card.architecture}: {result['sort_photos_per_s']:.0f} photos/s in batches of "
         f"{SORT_BATCH}, {result['serve_ms_p50']:.1f} ms per single photo ({model.backend}, decoding included)")
    return result
