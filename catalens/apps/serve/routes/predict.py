"""POST /v1/predict: the top-k classes of one or several images (and a title, for models trained with --text)."""

from __future__ import annotations

import time

import torch
from fastapi import FastAPI, Query, Request
from starlette.concurrency import run_in_threadpool

from catalens.apps.serve.errors import documented
from catalens.apps.serve.inputs import decode_upload
from catalens.apps.serve.requests import predict_body, read_images
from catalens.apps.serve.services import Services
from catalens.inference.records import tag_entries, target_entries, top_k_entries
from catalens.models.targets import TAGS


def install(routes: FastAPI, services: Services) -> None:
    """Add this module's routes to the app (on the app itself: its own route list is what the metrics labels and
    the Allow header of a 405 read)."""
    options, model, history, name = services.options, services.model, services.history, services.name

    @routes.post("/v1/predict", summary="Top-k classes for one or several images",
                 responses=documented(400, 401, 403, 413, 415, 422),
                 openapi_extra={"requestBody": predict_body(options)})
    async def predict(request: Request, k: int = Query(5, ge=1, le=100, description="How many classes to return."),
                      aggregate: bool = Query(False, description="Several images of one product: average them "
                                              "into one prediction.")):
        """Send images as multipart field `file` (one or several), or JSON `{"images": [{"url": ...} or
        {"base64": ...}]}`. One image, or `aggregate=true`: `{"predictions": [...]}`; several images:
        `{"results": [{"filename", "predictions", "id"}, ...]}`. A run trained with --targets also answers
        `"targets": {name: {"label", "probability", "top_k"}}`. Every prediction is kept in the history."""
        started = time.perf_counter()
        uploads, title = await read_images(request, services)  # at most max_images: form(max_files), JSON check
        images = [await run_in_threadpool(decode_upload, data, filename, options.max_bytes, options.max_pixels,
                                         model.preprocessing)
                  for filename, data in uploads]
        batch = await run_in_threadpool(lambda: torch.stack([model.preprocessing.prepare(im) for im in images]))
        targets = None
        if model.text is not None:  # image + title: the fused head (the image head when no title is sent)
            from catalens.models.text import clean_title

            probabilities = await run_in_threadpool(model.probabilities, batch, [clean_title(title)] * len(images))
        elif model.targets is not None:  # several targets: one backbone pass, every head
            scaled, targets = await run_in_threadpool(model.target_probabilities, batch)
            probabilities = model.finish_probabilities(scaled)
        else:
            probabilities = await services.batcher.probabilities(batch)
        originals = [data if options.keep_originals else None for _, data in uploads]
        if aggregate or len(images) == 1:
            top = top_k_entries(model, probabilities.mean(axis=0), k)
            filename = uploads[0][0] if len(uploads) == 1 else f"{uploads[0][0]} (+{len(uploads) - 1})"
            item = await run_in_threadpool(history.add, filename, name, top, images[0], len(images), originals[0])
            body = {"predictions": top, "id": item["id"], "images": len(images)}
            if targets is not None:
                mean = {name: value.mean(axis=0) for name, value in targets.items()}
                body["targets"] = target_entries(model, mean, k)
                if TAGS in mean:
                    body["tags"] = tag_entries(model, mean[TAGS])
        else:
            results = []
            for (filename, _), image, row, original in zip(uploads, images, probabilities, originals):
                top = top_k_entries(model, row, k)
                item = await run_in_threadpool(history.add, filename, name, top, image, 1, original)
                results.append({"filename": filename, "predictions": top, "id": item["id"]})
                if targets is not None:
                    one = {name: value[len(results) - 1] for name, value in targets.items()}
                    results[-1]["targets"] = target_entries(model, one, k)
                    if TAGS in one:
                        results[-1]["tags"] = tag_entries(model, one[TAGS])
            body = {"results": results}
        return {**body, "model": name, "latency_ms": round(1000 * (time.perf_counter() - started), 2)}

