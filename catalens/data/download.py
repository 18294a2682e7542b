"""Downloading product images by URL into a content-addressed cache: concurrent, with timeouts, retries with
exponential back-off, a size cap and a content check. A failure is returned with its reason, never raised.

Layout under the cache folder: `objects/ab/<sha256 of the bytes>.<ext>` holds each image once however many URLs
point at it; `urls/ab/<sha256 of the URL>` holds the object's name, so a URL is fetched once.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
from PIL import Image

from catalens.cache import cache_root
from catalens.data.safe_urls import SafeClient, UrlForbidden
from catalens.files import write_atomic

# Defaults; CATALENS_DOWNLOAD_MAX_BYTES, _TIMEOUT and _RETRIES override them when a Downloader is made.
MAX_BYTES = 20 * 1024 * 1024
TIMEOUT_S = 10.0
RETRIES = 3  # attempts after the first: timeouts, connection errors, 5xx, 408, 429
BACKOFF_S = 0.5  # then 1, 2 s ...


@dataclass
class Fetched:
    url: str
    path: Path | None
    error: str | None = None


class Permanent(Exception):
    """A failure that retrying will not fix (404, not an image, too large)."""


def default_cache() -> Path:
    return cache_root() / "images"


def check_image_bytes(data: bytes) -> str:
    """The image format of the bytes (e.g. 'jpeg'), or Permanent with the reason they are not an image."""
    head = data[:512].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")):
        raise Permanent("the server sent an HTML page, not an image")
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
            return (image.format or "img").lower()
    except Exception as error:  # noqa: BLE001 - anything PIL cannot open is not an image for us
        raise Permanent(f"not an image ({type(error).__name__})") from error


def fetch_once(client: SafeClient, url: str, max_bytes: int) -> bytes:
    response = client.open(url)
    try:
        if 400 <= response.status_code < 500 and response.status_code not in (408, 429):  # 408, 429: try again
            raise Permanent(f"HTTP {response.status_code}")
        response.raise_for_status()
        declared = response.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > max_bytes:
            raise Permanent(f"larger than the {max_bytes // (1024 * 1024)} MB limit ({int(declared):,} bytes)")
        chunks, size = [], 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > max_bytes:
                raise Permanent(f"larger than the {max_bytes // (1024 * 1024)} MB limit")
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        response.close()


class Downloader:
    def __init__(self, cache: Path | None = None, workers: int = 16, timeout: float | None = None,
                 retries: int | None = None, max_bytes: int | None = None, backoff: float = BACKOFF_S,
                 allow_private: bool = False):
        """`allow_private`: fetch URLs at private, loopback or link-local addresses too (safe_urls.py)."""
        timeout = float(os.environ.get("CATALENS_DOWNLOAD_TIMEOUT", TIMEOUT_S)) if timeout is None else timeout
        retries = int(os.environ.get("CATALENS_DOWNLOAD_RETRIES", RETRIES)) if retries is None else retries
        max_bytes = int(os.environ.get("CATALENS_DOWNLOAD_MAX_BYTES", MAX_BYTES)) if max_bytes is None else max_bytes
        self.cache = Path(cache) if cache else default_cache()
        self.workers, self.retries, self.max_bytes, self.backoff = workers, retries, max_bytes, backoff
        self.allow_private = allow_private
        self.timeout = httpx.Timeout(timeout)

    def _url_file(self, url: str) -> Path:
        digest = hashlib.sha256(url.encode()).hexdigest()
        return self.cache / "urls" / digest[:2] / digest

    def cached(self, url: str) -> Path | None:
        pointer = self._url_file(url)
        if pointer.is_file():
            path = self.cache / "objects" / pointer.read_text().strip()
            if path.is_file():
                return path
        return None

    def store(self, url: str, data: bytes, kind: str) -> Path:
        digest = hashlib.sha256(data).hexdigest()
        name = f"{digest[:2]}/{digest}.{kind}"
        path = self.cache / "objects" / name
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, data)
        pointer = self._url_file(url)
        pointer.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(pointer, name)  # a kill mid-write left a pointer to nothing
        return path

    def fetch(self, client: SafeClient, url: str) -> Fetched:
        path = self.cached(url)
        if path:
            return Fetched(url, path)
        error = "not tried"
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                data = fetch_once(client, url, self.max_bytes)
                return Fetched(url, self.store(url, data, check_image_bytes(data)))
            except (Permanent, UrlForbidden) as failure:
                return Fetched(url, None, str(failure))
            except httpx.TimeoutException:
                error = f"timed out after {self.timeout.read:g} s"
            except httpx.HTTPStatusError as failure:
                error = f"HTTP {failure.response.status_code}"
            except httpx.HTTPError as failure:
                error = f"{type(failure).__name__}: {str(failure).splitlines()[0] if str(failure) else ''}".strip()
        return Fetched(url, None, f"{error} ({self.retries + 1} attempts)")

    def fetch_all(self, urls: list[str], progress_callback=None) -> dict[str, Fetched]:
        unique = list(dict.fromkeys(urls))
        results: dict[str, Fetched] = {}
        limits = httpx.Limits(max_connections=self.workers, max_keepalive_connections=self.workers)
        with httpx.Client(timeout=self.timeout, follow_redirects=False, limits=limits) as client, \
                ThreadPoolExecutor(self.workers) as pool:  # redirects: followed by SafeClient, each hop checked
            safe = SafeClient(client, self.allow_private)
            for fetched in pool.map(lambda url: self.fetch(safe, url), unique):
                results[fetched.url] = fetched
                if progress_callback:
                    progress_callback()
        return results
