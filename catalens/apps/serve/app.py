"""The FastAPI app: prediction API, model card, history with corrections, health, Prometheus metrics, the page.

The model is loaded once, at start-up, from the path given on the command line; no request can name a file or a
model. Every error is JSON `{"error": {"code": ..., "message": ...}}` with a 4xx status, and the server goes on
(errors.py). The routes live in routes/, one module per group, each given the shared services explicitly.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from starlette.concurrency import run_in_threadpool

from catalens.apps.serve.errors import install_error_handlers, install_middleware
from catalens.apps.serve.routes import history, match, predict, status
from catalens.apps.serve.services import ServeOptions, Services, start_services
from catalens.data.safe_urls import AsyncSafeClient

__all__ = ["ServeOptions", "create_app"]


def lifespan_of(services: Services):
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await services.batcher.start()
        services.http = AsyncSafeClient(httpx.AsyncClient(timeout=services.options.url_timeout_s,
                                                          follow_redirects=False),
                                        services.options.allow_private_urls)  # each redirect hop is checked there
        yield
        await services.batcher.stop()
        await services.http.client.aclose()
        await run_in_threadpool(services.history.close)  # writes what is still queued

    return lifespan


def create_app(model_path: str | Path, options: ServeOptions | None = None, backend: str = "auto") -> FastAPI:
    services = start_services(model_path, options or ServeOptions(), backend)
    app = FastAPIOffline(  # /docs works offline: Swagger UI's assets come with fastapi-offline, not from a CDN
        title="catalens", version="1", lifespan=lifespan_of(services),
        description=f"Product image classification with `{services.name}` ({len(services.model.classes)} classes).")
    app.state.services = services
    install_middleware(app, services)
    install_error_handlers(app)
    for module in (predict, match, history, status):
        module.install(app, services)
    return app
