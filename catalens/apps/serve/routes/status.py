"""The model card, liveness and readiness, Prometheus metrics, and the web page."""

from __future__ import annotations

import asyncio
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from catalens.apps.serve.errors import documented
from catalens.apps.serve.services import Services

PAGE = Path(__file__).parents[1] / "page.html"


def install(routes: FastAPI, services: Services) -> None:
    """Add this module's routes to the app (on the app itself: its own route list is what the metrics labels and
    the Allow header of a 405 read)."""
    options, model, batcher, history = services.options, services.model, services.batcher, services.history

    @routes.get("/v1/model", summary="The model card", responses=documented(401))
    async def model_card():
        card = {key: value for key, value in model.card.to_dict().items() if key not in ("config", "data")}
        return {**card, "name": services.name, "backend": model.backend,
                "batching": {"max_batch": options.max_batch, "max_wait_ms": options.max_wait_ms}}

    @routes.get("/healthz", summary="The process is up")
    async def healthz():
        return {"status": "ok"}

    @routes.get("/readyz", summary="Model loaded, batcher running, database reachable",
                responses={503: {"description": "Not ready: the model, the batcher or the database is not"}})
    async def readyz():
        checks = {"model": True, "batcher": batcher.running,
                  "database": await asyncio.wait_for(run_in_threadpool(history.ready), 5)}
        return JSONResponse({"ready": all(checks.values()), **checks}, status_code=200 if all(checks.values()) else 503)

    @routes.get("/metrics", summary="Prometheus metrics", responses=documented(content="text/plain"),
                response_class=Response)
    async def prometheus():
        return Response(generate_latest(services.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @routes.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        return HTMLResponse(PAGE.read_text())

