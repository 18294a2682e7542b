"""Every error the service answers is JSON `{"error": {"code": ..., "message": ...}}` with a 4xx status, and the
server goes on: the handlers, the body-size limit, the API-key check and the request metrics that wrap every
route."""

from __future__ import annotations

import secrets
import time

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from catalens.apps.serve.inputs import InputError
from catalens.apps.serve.services import Services


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


def install_middleware(app: FastAPI, services: Services) -> None:
    """The API key (for /v1/*), request metrics, the body-size limit and CORS (only for the origins given)."""
    options, metrics = services.options, services.metrics

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


def install_error_handlers(app: FastAPI) -> None:
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
