"""POST /v1/match: the nearest catalog products of a photo and/or a title (servers started with --match-index)."""

from __future__ import annotations

import time

from fastapi import FastAPI, Query, Request
from starlette.concurrency import run_in_threadpool

from catalens.apps.serve.errors import documented
from catalens.apps.serve.inputs import InputError, decode_upload
from catalens.apps.serve.requests import match_body, read_images
from catalens.apps.serve.services import Services


def install(routes: FastAPI, services: Services) -> None:
    """Add this module's routes to the app (on the app itself: its own route list is what the metrics labels and
    the Allow header of a 405 read)."""
    options, model, products = services.options, services.model, services.products

    @routes.post("/v1/match", summary="The nearest catalog products of a photo and/or a title",
                 responses=documented(400, 401, 403, 404, 413, 415, 422),
                 openapi_extra={"requestBody": match_body(options)})
    async def match_products(request: Request, k: int = Query(5, ge=1, le=100, description="How many products.")):
        """Send a photo (multipart field `file`, or JSON `{"images": [{"url"} or {"base64"}]}`), a `title`, or
        both: `{"matches": [{"item_id", "product_id", "label", "title", "score", "image_score", "title_score"}]}`,
        best first, one entry per product. Needs a server started with `--match-index INDEX`."""
        if products is None:
            raise InputError(404, "this server has no product index: start it with --match-index INDEX (built by "
                             "`catalens match index DATA --run RUN --out INDEX`)", "not_found")
        started = time.perf_counter()
        uploads, title = await read_images(request, services, images_required=False)
        if len(uploads) > 1:
            raise InputError(422, f"{len(uploads)} images: /v1/match takes one photo", "too_many")
        features = None
        if uploads:
            image = await run_in_threadpool(decode_upload, uploads[0][1], uploads[0][0], options.max_bytes,
                                            options.max_pixels, model.preprocessing)
            batch = await run_in_threadpool(lambda: model.preprocessing.prepare(image)[None])
            features = (await run_in_threadpool(model.image_features, batch))[0]
        found = await run_in_threadpool(products.query, features, title, k)
        return {"matches": found, "index_items": len(products), "model": services.name,
                "latency_ms": round(1000 * (time.perf_counter() - started), 2)}

