"""The prediction history: pages of past predictions, their thumbnails, corrections, and the corrections as a
labelled image folder (zip) for retraining."""

from __future__ import annotations

import io
import json
import tempfile
import zipfile
from pathlib import Path

from fastapi import FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from catalens.apps.serve.errors import documented
from catalens.apps.serve.inputs import InputError
from catalens.apps.serve.services import Services

MAX_ID = 2**63 - 1  # database integers are 64-bit: a larger id is a 422, not an overflow (a 500)
MAX_PAGE = 10**9


def correction_body(classes: list[str]) -> dict:
    return {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "required": ["label"],
        "properties": {"label": {"enum": [*classes, None], "description": "the right class, or null to "
                                 "clear the correction"}}}}}}


def zipped_export(history, include_uncorrected: bool) -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        history.export(folder, include_uncorrected=include_uncorrected)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            for path in sorted(Path(folder).rglob("*")):
                if path.is_file():
                    archive.write(path, path.relative_to(folder).as_posix())
        return buffer.getvalue()


def install(routes: FastAPI, services: Services) -> None:
    """Add this module's routes to the app (on the app itself: its own route list is what the metrics labels and
    the Allow header of a 405 read)."""
    history, classes = services.history, services.model.classes

    @routes.get("/v1/history", summary="Past predictions, newest first", responses=documented(401, 422))
    async def history_page(page: int = Query(1, ge=1, le=MAX_PAGE), per_page: int = Query(20, ge=1, le=200)):
        return await run_in_threadpool(history.page, page, per_page)

    @routes.get("/v1/history/{prediction_id}/thumbnail", summary="A past prediction's thumbnail (JPEG)",
                responses=documented(401, 404, 422, content="image/jpeg"), response_class=Response)
    async def history_thumbnail(prediction_id: int = PathParam(ge=1, le=MAX_ID)):
        data = await run_in_threadpool(history.thumbnail, prediction_id)
        if data is None:
            raise InputError(404, f"no prediction {prediction_id}", "not_found")
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=86400"})

    @routes.post("/v1/history/{prediction_id}/correction", summary="Mark a prediction wrong: set its right label",
                 responses=documented(400, 401, 404, 413, 422),
                 openapi_extra={"requestBody": correction_body(classes)})
    async def history_correct(request: Request, prediction_id: int = PathParam(ge=1, le=MAX_ID)):
        try:
            payload = json.loads(await request.body() or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise InputError(400, f"malformed JSON: {error}", "bad_json") from None
        label = payload.get("label") if isinstance(payload, dict) else None
        if label is not None and label not in classes:
            raise InputError(422, f"{str(label)[:100]!r} is not one of the model's classes", "unknown_label")
        if not isinstance(payload, dict) or "label" not in payload:
            raise InputError(422, 'send {"label": "<class>"} (or {"label": null} to clear)', "bad_json")
        item = await run_in_threadpool(history.correct, prediction_id, label)
        if item is None:
            raise InputError(404, f"no prediction {prediction_id}", "not_found")
        return item

    @routes.get("/v1/history/export", summary="Corrections as a labelled image folder (zip) for retraining",
                responses=documented(401, 422, content="application/zip"), response_class=Response)
    async def history_export(all: bool = Query(False, description="Also the uncorrected predictions, under "
                                               "their predicted label.")):
        return Response(await run_in_threadpool(zipped_export, history, all), media_type="application/zip",
                        headers={"Content-Disposition": 'attachment; filename="catalens-corrections.zip"'})

