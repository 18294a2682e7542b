"""What a request may send, checked before any pixel is decoded: size, type by content, pixel count.

Every refusal is an `InputError` with an HTTP status and a one-line message, answered as JSON in milliseconds.
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings

import httpx
from PIL import Image, UnidentifiedImageError

from catalens.data.images import load_image
from catalens.data.safe_urls import AsyncSafeClient, UrlForbidden
from catalens.loading.preprocess import Preprocessing

ORIENTATION = 0x0112  # EXIF: 5-8 turn the picture a quarter, so the stored width is the shown height
ACCEPTED_FORMATS = {"JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "MPO"}


class InputError(Exception):
    def __init__(self, status: int, message: str, code: str = "bad_input"):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


def decode_upload(data: bytes, name: str, max_bytes: int, max_pixels: int,
                  preprocessing: Preprocessing | None = None) -> Image.Image:
    """Bytes of one image -> RGB PIL image, or InputError: empty, too big, not an image (by content, whatever the
    name says), more pixels than `max_pixels` (checked from the header, before decoding: decompression bombs),
    truncated or corrupt. With the model's `preprocessing`, a JPEG is decoded at the smallest DCT scale that still
    covers what the model's resize needs (draft mode: a 2000 px photo for a 224 px model decodes at 1/4 or 1/8)."""
    if not data:
        raise InputError(400, f"{name}: empty file", "empty")
    if len(data) > max_bytes:
        raise InputError(413, f"{name}: {len(data) / 1e6:.1f} MB is over the {max_bytes / 1e6:.0f} MB limit",
                         "too_large")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputError(413, f"{name}: too many pixels (over the {max_pixels / 1e6:.0f} megapixel limit)",
                         "too_many_pixels") from None
    except (UnidentifiedImageError, OSError):
        raise InputError(415, f"{name}: not an image, or not one of JPEG, PNG, WebP, GIF, BMP, TIFF",
                         "unsupported_type") from None
    if image.format not in ACCEPTED_FORMATS:
        raise InputError(415, f"{name}: {image.format} images are not accepted (JPEG, PNG, WebP, GIF, BMP, TIFF)",
                         "unsupported_type")
    width, height = image.size
    if width * height > max_pixels:
        raise InputError(413, f"{name}: {width}x{height} pixels is over the {max_pixels / 1e6:.0f} megapixel limit",
                         "too_many_pixels")
    draft = (512, 512) if preprocessing is None else draft_size(image, preprocessing)
    try:
        return load_image(io.BytesIO(data), draft_size=draft)
    except Exception as error:  # noqa: BLE001 - any decoder failure is the client's broken file
        reason = "truncated image" if "truncated" in str(error).lower() else "corrupt image"
        raise InputError(422, f"{name}: {reason}", "corrupt_image") from None


def draft_size(image: Image.Image, preprocessing: Preprocessing) -> tuple[int, int] | None:
    """The size a JPEG may be DCT-scaled down to and still cover the model's resize; None when no scale would
    apply (under twice that size), so that the EXIF orientation is only read when it matters."""
    if image.format not in ("JPEG", "MPO"):
        return None
    resized, _ = preprocessing.resize_plan(*image.size)
    if image.width < 2 * min(resized) or image.height < 2 * min(resized):
        return None
    if image.getexif().get(ORIENTATION) in (5, 6, 7, 8):  # shown turned: the resize applies to the turned image
        resized, _ = preprocessing.resize_plan(image.height, image.width)
        return resized[1], resized[0]
    return resized


def decode_base64(text: str, name: str, max_bytes: int) -> bytes:
    if not isinstance(text, str):
        raise InputError(400, f"{name}: base64 must be a string", "bad_json")
    if "," in text[:100] and text.startswith("data:"):
        text = text.split(",", 1)[1]  # a data: URL
    if len(text) > max_bytes * 4 // 3 + 4:
        raise InputError(413, f"{name}: over the {max_bytes / 1e6:.0f} MB limit", "too_large")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InputError(400, f"{name}: not valid base64", "bad_base64") from None


async def fetch_url(client: AsyncSafeClient, url: str, max_bytes: int) -> bytes:
    """The bytes at an http(s) URL, streamed with a size cap. A URL inside the network (safe_urls.py) is a 400
    `url_forbidden` with nothing sent; an unreachable or failing public URL is a 422."""
    if not isinstance(url, str) or not url.lower().startswith(("http://", "https://")):
        raise InputError(400, f"{str(url)[:100]!r} is not an http(s) URL", "bad_url")
    try:
        response = await client.open(url)
    except UrlForbidden as error:
        raise InputError(400, str(error), "url_forbidden") from None
    except httpx.HTTPError as error:
        raise InputError(422, f"{url}: could not be fetched ({type(error).__name__})", "url_failed") from None
    try:
        if response.status_code != 200:
            raise InputError(422, f"{url}: the server answered {response.status_code}", "url_failed")
        chunks, size = [], 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > max_bytes:
                raise InputError(413, f"{url}: over the {max_bytes / 1e6:.0f} MB limit", "too_large")
            chunks.append(chunk)
        return b"".join(chunks)
    except httpx.HTTPError as error:
        raise InputError(422, f"{url}: could not be fetched ({type(error).__name__})", "url_failed") from None
    finally:
        await response.aclose()
