"""The FastAPI app: prediction API, model card, history with corrections, health, Prometheus metrics, the page.

The model is loaded once, at start-up, from the path given on the command line; no request can name a file or a
model. Every error is JSON `{"error": {"code": ..., "message": ...}}` with a 4xx status, and the server goes on.
"""

from __future__ import annotations

import asyncio
import io
import json
import secrets
import tempfile
import time
import zipfile
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import torch
from fastapi import FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from catalens.apps.serve.batcher import MicroBatcher
from catalens.apps.serve.history import History
from catalens.apps.serve.inputs import InputError, decode_base64, decode_upload, fetch_url
from catalens.data.safe_urls import AsyncSafeClient
from catalens.errors import CatalensError
from catalens.inference.records import top_k_entries
from catalens.models.fusion import read_text_columns
from catalens.rundir.run import Model

PAGE = Path(__file__).with_name("page.html")
MAX_ID = 2**63 - 1  # database integers are 64-bit: a larger id is a 422, not an overflow (a 500)
MAX_PAGE = 10**9


@dataclass
class ServeOptions:
    db: str = "sqlite:///catalens-history.db"
    max_batch: int = 16  # 1: batching off
    max_wait_ms: float = 0.0  # 0: no waiting; batches form from what queued while the model was busy
    max_upload_mb: float = 10.0
    max_pixels: int = 40_000_000
    max_images: int = 8  # per request
    api_key: str | None = None  # when set, /v1/* needs the X-API-Key header
    cors_origins: list[str] = field(default_factory=list)
    keep_originals: bool = False
    allow_urls: bool = True
    allow_private_urls: bool = False  # fetch URLs inside the network too (safe_urls.py); off: SSRF-safe
    url_timeout_s: float = 5.0
    match_index: str | None = None  # a product index (inference/product_index.py) for POST /v1/match
    text: str | None = None  # --text: the model must read text (fusion.read_text_columns)
    max_title_chars: int = 2000

    @property
    def max_bytes(self) -> int:
        return int(self.max_upload_mb * 1e6)


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter("catalens_requests", "HTTP requests by path and status", ["path", "status"],
                                registry=self.registry)
        self.latency = Histogram("catalens_request_seconds", "Request latency (server side)", ["path"],
                                 buckets=(.002, .005, .0075, .01, .015, .02, .03, .05, .075, .1, .25, .5, 1, 2.5),
                                 registry=self.registry)
        self.batch_size = Histogram("catalens_batch_size", "Images per model call",
                                    buckets=(1, 2, 4, 8, 16, 32, 64), registry=self.registry)
        self.queue_depth = Gauge("catalens_queue_depth", "Requests waiting for the model", registry=self.registry)


class ErrorDetail(BaseModel):
    code: str  # machine-readable: bad_url, url_forbidden, too_large, unsupported_type, not_found, ...
    message: str  # one line, says what to do


class ErrorBody(BaseModel):
    error: ErrorDetail


ERROR_MEANINGS = {
    400: "Malformed request: empty body, bad JSON or base64, a URL that is not http(s) or points inside the network",
    401: "Missing or wrong X-API-Key header (servers started with --api-key)",
    403: "URL fetching is off on this server (--no-urls)",
    404: "No such prediction",
    413: "Request body, image count or image size over the server's limits",
    415: "Not an image type catalens reads",
    422: "A parameter or a field out of its bounds, or a URL that could not be fetched",
}


def documented(*codes: int, content: str | None = None) -> dict:
    """OpenAPI `responses` for a route: its error answers (the same JSON model for all), and the content type
    of its success answer when it is not JSON."""
    responses: dict = {code: {"model": ErrorBody, "description": ERROR_MEANINGS[code]} for code in codes}
    if content:
        responses[200] = {"content": {content: {"schema": {"type": "string", "format": "binary"}
                                                if not content.startswith("text/") else {"type": "string"}}},
                          "description": "OK"}
    return responses


def allowed_methods(app: FastAPI, path: str) -> list[str]:
    """The methods the routes at `path` answer (for the Allow header of a 405)."""
    methods = set()
    for route in app.router.routes:
        regex = getattr(route, "path_regex", None)
        if regex is not None and regex.match(path):
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods | ({"HEAD"} if "GET" in methods else set()))


def error_response(status: int, message: str, code: str = "bad_request") -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


class BodyLimit:
    """ASGI middleware: a body over the limit is refused with 413 before it is read (Content-Length) or as soon as
    it passes the limit (chunked)."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length and length.isdigit() and int(length) > self.max_bytes:
            response = error_response(413, f"request body of {int(length) / 1e6:.1f} MB is over the "
                                      f"{self.max_bytes / 1e6:.0f} MB limit", "too_large")
            return await response(scope, receive, send)
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise InputError(413, f"request body is over the {self.max_bytes / 1e6:.0f} MB limit", "too_large")
            return message

        return await self.app(scope, limited_receive, send)


def route_path(app: FastAPI, request: Request) -> str:
    """The route's template (/v1/history/{prediction_id}/thumbnail), also for requests refused before routing:
    metrics labels stay few."""
    route = request.scope.get("route")
    if route is None:
        route = next((candidate for candidate in app.router.routes
                      if candidate.matches(request.scope)[0] == Match.FULL), None)
    return getattr(route, "path", "unmatched")


def create_app(model_path: str | Path, options: ServeOptions | None = None, backend: str = "auto") -> FastAPI:
    options = options or ServeOptions()
    model = Model.load(model_path, backend=backend, latency=True)
    read_text_columns(model, options.text)
    name = Path(model_path).name
    history = History(options.db)
    metrics = Metrics()
    batcher = MicroBatcher(model, options.max_batch, options.max_wait_ms,
                           observe_batch=metrics.batch_size.observe, observe_queue=metrics.queue_depth.set)
    http: dict[str, AsyncSafeClient] = {}
    products = None
    if options.match_index:
        from catalens.inference.product_index import load_index, model_digest

        products = load_index(options.match_index)
        if model.module is None or products.meta["weights_sha256"] != model_digest(model):
            raise CatalensError(f"the product index {options.match_index} was built with another model "
                                f"({products.meta['model']}): serve that model, or build the index with this one")
    if model.text is not None or products is not None:  # the feature network is exported once, before any request
        height, width = model.preprocessing.input_size
        model.image_features(torch.zeros(1, model.preprocessing.channels, height, width, dtype=torch.uint8))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        http["client"] = AsyncSafeClient(httpx.AsyncClient(timeout=options.url_timeout_s, follow_redirects=False),
                                         options.allow_private_urls)  # each redirect hop is checked there
        yield
        await batcher.stop()
        await http["client"].client.aclose()
        await run_in_threadpool(history.close)  # writes what is still queued

    app = FastAPIOffline(  # /docs works offline: Swagger UI's assets come with fastapi-offline, not from a CDN
        title="catalens", version="1", lifespan=lifespan,
        description=f"Product image classification with `{name}` ({len(model.classes)} classes).")
    app.state.model, app.state.history, app.state.batcher, app.state.metrics = model, history, batcher, metrics

    @app.middleware("http")
    async def observe(request: Request, call_next):
        started = time.perf_counter()
        if options.api_key and request.url.path.startswith("/v1/") and not secrets.compare_digest(
                request.headers.get("x-api-key", ""), options.api_key):
            response = error_response(401, "missing or wrong X-API-Key header", "unauthorized")
        else:
            try:
                response = await call_next(request)
            except InputError as error:  # raised while the body was being read (BodyLimit)
                response = error_response(error.status, error.message, error.code)
        path = route_path(app, request)
        metrics.requests.labels(path, str(response.status_code)).inc()
        metrics.latency.labels(path).observe(time.perf_counter() - started)
        return response

    app.add_middleware(BodyLimit, max_bytes=options.max_bytes + 65_536)  # the images of a request, with headers
    if options.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=options.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["*"])

    @app.exception_handler(InputError)
    async def input_error(request: Request, error: InputError):
        return error_response(error.status, error.message, error.code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError):
        first = error.errors()[0] if error.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()))
        return error_response(422, f"{where}: {first.get('msg', 'invalid request')}", "invalid")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException):
        response = error_response(error.status_code, str(error.detail), "not_found" if error.status_code == 404
                                  else "method_not_allowed" if error.status_code == 405 else "http_error")
        if error.status_code == 405:  # RFC 9110: say which methods the resource has
            response.headers["Allow"] = ", ".join(allowed_methods(app, request.url.path))
        return response

    title_schema = {"type": "string", "maxLength": options.max_title_chars,
                    "description": "the product's title (read by models trained with --text, and by /v1/match)"}
    predict_body = {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
            "file": {"type": "array", "items": {"type": "string", "format": "binary"}, "minItems": 1,
                     "maxItems": options.max_images}, "title": title_schema}}},
        "application/json": {"schema": {"type": "object", "required": ["images"], "properties": {
            "title": title_schema,
            "images": {"type": "array", "minItems": 1, "maxItems": options.max_images, "items": {
                "type": "object", "anyOf": [{"required": ["url"]}, {"required": ["base64"]}], "properties": {
                    "url": {"type": "string", "format": "uri", "description": "http(s), at a public address"},
                    "base64": {"type": "string", "format": "byte", "description": "the image file, base64"},
                    "name": {"type": "string"}}}}}}}}}
    correction_body = {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "required": ["label"],
        "properties": {"label": {"enum": [*model.classes, None], "description": "the right class, or null to "
                                 "clear the correction"}}}}}}

    def read_title(value) -> str:
        if value is None:
            return ""
        if not isinstance(value, str):
            raise InputError(422, "`title` must be a string", "bad_title")
        if len(value) > options.max_title_chars:
            raise InputError(422, f"`title` has {len(value):,} characters: at most {options.max_title_chars:,}",
                             "too_long")
        return value

    async def read_images(request: Request, images_required: bool = True) -> tuple[list[tuple[str, bytes]], str]:
        """(the request's images as (name, bytes), its title or "")."""
        content_type = request.headers.get("content-type", "")
        if content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
            try:
                form = await request.form(max_files=options.max_images, max_fields=options.max_images + 10)
            except InputError:
                raise
            except Exception as error:  # noqa: BLE001 - a malformed multipart body
                raise InputError(400, f"malformed multipart body ({str(error)[:100]})", "bad_multipart") from None
            files = [item for item in form.getlist("file") if isinstance(item, UploadFile)]
            title = read_title(form.get("title"))
            if not files and not images_required and title:
                return [], title
            if not files:
                fields = ", ".join(sorted(form.keys())) or "none"
                raise InputError(422, f"no `file` field in the form (fields sent: {fields}); send the image as "
                                 "multipart field `file`", "missing_file")
            return [(item.filename or "upload", await item.read(options.max_bytes + 1)) for item in files], title
        body = await request.body()
        if not body:
            raise InputError(400, "empty request: send the image as multipart field `file`, or JSON "
                             '{"images": [{"url": ...} or {"base64": ...}]}', "empty")
        if "json" not in content_type:
            raise InputError(415, f"unsupported content type {content_type or 'none'!r}: use multipart/form-data or "
                             "application/json", "unsupported_type")
        try:
            payload = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise InputError(400, f"malformed JSON: {error}", "bad_json") from None
        title = read_title(payload.get("title")) if isinstance(payload, dict) else ""
        entries = payload.get("images") if isinstance(payload, dict) else None
        if entries is None and not images_required and title:
            return [], title
        if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
            raise InputError(422, 'JSON must be {"images": [{"url": "https://..."} or {"base64": "..."}, ...]}',
                             "bad_json")
        if len(entries) > options.max_images:
            raise InputError(422, f"{len(entries)} images: at most {options.max_images} per request", "too_many")
        found = []
        for i, entry in enumerate(entries):
            label = str(entry.get("name") or f"image {i + 1}")
            if "base64" in entry:
                found.append((label, decode_base64(entry["base64"], label, options.max_bytes)))
            elif "url" in entry:
                if not options.allow_urls:
                    raise InputError(403, "this server does not fetch URLs (started with --no-urls)", "urls_off")
                found.append((entry.get("name") or entry["url"],
                              await fetch_url(http["client"], entry["url"], options.max_bytes)))
            else:
                raise InputError(422, f"images[{i}] needs a `url` or a `base64` key", "bad_json")
        return found, title

    @app.post("/v1/predict", summary="Top-k classes for one or several images",
              responses=documented(400, 401, 403, 413, 415, 422), openapi_extra={"requestBody": predict_body})
    async def predict(request: Request, k: int = Query(5, ge=1, le=100, description="How many classes to return."),
                      aggregate: bool = Query(False, description="Several images of one product: average them "
                                              "into one prediction.")):
        """Send images as multipart field `file` (one or several), or JSON `{"images": [{"url": ...} or
        {"base64": ...}]}`. One image, or `aggregate=true`: `{"predictions": [...]}`; several images:
        `{"results": [{"filename", "predictions", "id"}, ...]}`. Every prediction is kept in the history."""
        started = time.perf_counter()
        uploads, title = await read_images(request)  # at most max_images: form(max_files) and the JSON check cap it
        images = [await run_in_threadpool(decode_upload, data, filename, options.max_bytes, options.max_pixels,
                                         model.preprocessing)
                  for filename, data in uploads]
        batch = await run_in_threadpool(lambda: torch.stack([model.preprocessing.prepare(im) for im in images]))
        if model.text is not None:  # image + title: the fused head (the image head when no title is sent)
            from catalens.models.text import clean_title

            probabilities = await run_in_threadpool(model.probabilities, batch, [clean_title(title)] * len(images))
        else:
            probabilities = await batcher.probabilities(batch)
        originals = [data if options.keep_originals else None for _, data in uploads]
        if aggregate or len(images) == 1:
            top = top_k_entries(model, probabilities.mean(axis=0), k)
            filename = uploads[0][0] if len(uploads) == 1 else f"{uploads[0][0]} (+{len(uploads) - 1})"
            item = await run_in_threadpool(history.add, filename, name, top, images[0], len(images), originals[0])
            body = {"predictions": top, "id": item["id"], "images": len(images)}
        else:
            results = []
            for (filename, _), image, row, original in zip(uploads, images, probabilities, originals):
                top = top_k_entries(model, row, k)
                item = await run_in_threadpool(history.add, filename, name, top, image, 1, original)
                results.append({"filename": filename, "predictions": top, "id": item["id"]})
            body = {"results": results}
        return {**body, "model": name, "latency_ms": round(1000 * (time.perf_counter() - started), 2)}

    match_body = {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "properties": {
            "file": {"type": "string", "format": "binary"}, "title": title_schema}}},
        "application/json": {"schema": {"type": "object", "properties": {
            "title": title_schema, "images": predict_body["content"]["application/json"]["schema"]["properties"][
                "images"] | {"maxItems": 1}}}}}}

    @app.post("/v1/match", summary="The nearest catalog products of a photo and/or a title",
              responses=documented(400, 401, 403, 404, 413, 415, 422), openapi_extra={"requestBody": match_body})
    async def match_products(request: Request, k: int = Query(5, ge=1, le=100, description="How many products.")):
        """Send a photo (multipart field `file`, or JSON `{"images": [{"url"} or {"base64"}]}`), a `title`, or
        both: `{"matches": [{"item_id", "product_id", "label", "title", "score", "image_score", "title_score"}]}`,
        best first, one entry per product. Needs a server started with `--match-index INDEX`."""
        if products is None:
            raise InputError(404, "this server has no product index: start it with --match-index INDEX (built by "
                             "`catalens match index DATA --model RUN --out INDEX`)", "not_found")
        started = time.perf_counter()
        uploads, title = await read_images(request, images_required=False)
        if len(uploads) > 1:
            raise InputError(422, f"{len(uploads)} images: /v1/match takes one photo", "too_many")
        features = None
        if uploads:
            image = await run_in_threadpool(decode_upload, uploads[0][1], uploads[0][0], options.max_bytes,
                                            options.max_pixels, model.preprocessing)
            batch = await run_in_threadpool(lambda: model.preprocessing.prepare(image)[None])
            features = (await run_in_threadpool(model.image_features, batch))[0]
        found = await run_in_threadpool(products.query, features, title, k)
        return {"matches": found, "index_items": len(products), "model": name,
                "latency_ms": round(1000 * (time.perf_counter() - started), 2)}

    @app.get("/v1/model", summary="The model card", responses=documented(401))
    async def model_card():
        card = {key: value for key, value in model.card.to_dict().items() if key not in ("config", "data")}
        return {**card, "name": name, "backend": model.backend,
                "batching": {"max_batch": options.max_batch, "max_wait_ms": options.max_wait_ms}}

    @app.get("/v1/history", summary="Past predictions, newest first", responses=documented(401, 422))
    async def history_page(page: int = Query(1, ge=1, le=MAX_PAGE), per_page: int = Query(20, ge=1, le=200)):
        return await run_in_threadpool(history.page, page, per_page)

    @app.get("/v1/history/{prediction_id}/thumbnail", summary="A past prediction's thumbnail (JPEG)",
             responses=documented(401, 404, 422, content="image/jpeg"), response_class=Response)
    async def history_thumbnail(prediction_id: int = PathParam(ge=1, le=MAX_ID)):
        data = await run_in_threadpool(history.thumbnail, prediction_id)
        if data is None:
            raise InputError(404, f"no prediction {prediction_id}", "not_found")
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=86400"})

    @app.post("/v1/history/{prediction_id}/correction", summary="Mark a prediction wrong: set its right label",
              responses=documented(400, 401, 404, 413, 422), openapi_extra={"requestBody": correction_body})
    async def history_correct(request: Request, prediction_id: int = PathParam(ge=1, le=MAX_ID)):
        try:
            payload = json.loads(await request.body() or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise InputError(400, f"malformed JSON: {error}", "bad_json") from None
        label = payload.get("label") if isinstance(payload, dict) else None
        if label is not None and label not in model.classes:
            raise InputError(422, f"{str(label)[:100]!r} is not one of the model's classes", "unknown_label")
        if not isinstance(payload, dict) or "label" not in payload:
            raise InputError(422, 'send {"label": "<class>"} (or {"label": null} to clear)', "bad_json")
        item = await run_in_threadpool(history.correct, prediction_id, label)
        if item is None:
            raise InputError(404, f"no prediction {prediction_id}", "not_found")
        return item

    @app.get("/v1/history/export", summary="Corrections as a labelled image folder (zip) for retraining",
             responses=documented(401, 422, content="application/zip"), response_class=Response)
    async def history_export(all: bool = Query(False, description="Also the uncorrected predictions, under "
                                               "their predicted label.")):
        def build() -> bytes:
            with tempfile.TemporaryDirectory() as folder:
                history.export(folder, include_uncorrected=all)
                buffer = io.BytesIO()
                with zipfile.ZipFile(buffer, "w") as archive:
                    for path in sorted(Path(folder).rglob("*")):
                        if path.is_file():
                            archive.write(path, path.relative_to(folder).as_posix())
                return buffer.getvalue()

        return Response(await run_in_threadpool(build), media_type="application/zip",
                        headers={"Content-Disposition": 'attachment; filename="catalens-corrections.zip"'})

    @app.get("/healthz", summary="The process is up")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz", summary="Model loaded, batcher running, database reachable",
             responses={503: {"description": "Not ready: the model, the batcher or the database is not"}})
    async def readyz():
        checks = {"model": True, "batcher": batcher.running,
                  "database": await asyncio.wait_for(run_in_threadpool(history.ready), 5)}
        return JSONResponse({"ready": all(checks.values()), **checks}, status_code=200 if all(checks.values()) else 503)

    @app.get("/metrics", summary="Prometheus metrics", responses=documented(content="text/plain"),
             response_class=Response)
    async def prometheus():
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        return HTMLResponse(PAGE.read_text())

    return app
