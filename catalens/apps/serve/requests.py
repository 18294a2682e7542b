"""Reading a request's images and title (multipart or JSON), and the OpenAPI description of those bodies."""

from __future__ import annotations

import json

from fastapi import Request
from starlette.datastructures import UploadFile

from catalens.apps.serve.inputs import InputError, decode_base64, fetch_url
from catalens.apps.serve.services import ServeOptions, Services


def title_schema(options: ServeOptions) -> dict:
    return {"type": "string", "maxLength": options.max_title_chars,
            "description": "the product's title (read by models trained with --text, and by /v1/match)"}


def images_schema(options: ServeOptions, max_items: int) -> dict:
    return {"type": "array", "minItems": 1, "maxItems": max_items, "items": {
        "type": "object", "anyOf": [{"required": ["url"]}, {"required": ["base64"]}], "properties": {
            "url": {"type": "string", "format": "uri", "description": "http(s), at a public address"},
            "base64": {"type": "string", "format": "byte", "description": "the image file, base64"},
            "name": {"type": "string"}}}}


def predict_body(options: ServeOptions) -> dict:
    return {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
            "file": {"type": "array", "items": {"type": "string", "format": "binary"}, "minItems": 1,
                     "maxItems": options.max_images}, "title": title_schema(options)}}},
        "application/json": {"schema": {"type": "object", "required": ["images"], "properties": {
            "title": title_schema(options), "images": images_schema(options, options.max_images)}}}}}


def match_body(options: ServeOptions) -> dict:
    return {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "properties": {
            "file": {"type": "string", "format": "binary"}, "title": title_schema(options)}}},
        "application/json": {"schema": {"type": "object", "properties": {
            "title": title_schema(options), "images": images_schema(options, 1)}}}}}


def read_title(value, options: ServeOptions) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InputError(422, "`title` must be a string", "bad_title")
    if len(value) > options.max_title_chars:
        raise InputError(422, f"`title` has {len(value):,} characters: at most {options.max_title_chars:,}",
                         "too_long")
    return value


async def read_form(request: Request, options: ServeOptions,
                    images_required: bool) -> tuple[list[tuple[str, bytes]], str]:
    try:
        form = await request.form(max_files=options.max_images, max_fields=options.max_images + 10)
    except InputError:
        raise
    except Exception as error:  # noqa: BLE001 - a malformed multipart body
        raise InputError(400, f"malformed multipart body ({str(error)[:100]})", "bad_multipart") from None
    files = [item for item in form.getlist("file") if isinstance(item, UploadFile)]
    title = read_title(form.get("title"), options)
    if not files and not images_required and title:
        return [], title
    if not files:
        fields = ", ".join(sorted(form.keys())) or "none"
        raise InputError(422, f"no `file` field in the form (fields sent: {fields}); send the image as "
                         "multipart field `file`", "missing_file")
    return [(item.filename or "upload", await item.read(options.max_bytes + 1)) for item in files], title


async def read_json(request: Request, services: Services, content_type: str,
                    images_required: bool) -> tuple[list[tuple[str, bytes]], str]:
    options = services.options
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
    title = read_title(payload.get("title"), options) if isinstance(payload, dict) else ""
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
                          await fetch_url(services.client, entry["url"], options.max_bytes)))
        else:
            raise InputError(422, f"images[{i}] needs a `url` or a `base64` key", "bad_json")
    return found, title


async def read_images(request: Request, services: Services,
                      images_required: bool = True) -> tuple[list[tuple[str, bytes]], str]:
    """(the request's images as (name, bytes), its title or "")."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        return await read_form(request, services.options, images_required)
    return await read_json(request, services, content_type, images_required)
