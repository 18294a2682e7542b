"""What the routes of the service share, made once at start-up: the options, the model, the history database,
the micro-batcher, the metrics, the product index and the outbound HTTP client. Every route module takes it
explicitly (`router(services)`); no request can name a file or a model."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from catalens.apps.serve.batcher import MicroBatcher
from catalens.apps.serve.history import History
from catalens.data.safe_urls import AsyncSafeClient
from catalens.errors import CatalensError
from catalens.models.fusion import read_text_columns
from catalens.options import SERVE, default_of
from catalens.rundir.run import Model


@dataclass
class ServeOptions:
    """The service's settings; the defaults are `catalens serve`'s (options.py)."""
    db: str = default_of("db", SERVE)
    max_batch: int = default_of("max_batch", SERVE)  # 1: batching off
    max_wait_ms: float = default_of("max_wait_ms", SERVE)  # 0: batches form from what queued while the model ran
    max_upload_mb: float = default_of("max_upload_mb", SERVE)
    max_pixels: int = int(default_of("max_megapixels", SERVE) * 1e6)
    max_images: int = default_of("max_images", SERVE)  # per request
    api_key: str | None = default_of("api_key", SERVE)  # when set, /v1/* needs the X-API-Key header
    cors_origins: list[str] = field(default_factory=list)
    keep_originals: bool = default_of("keep_originals", SERVE)
    allow_urls: bool = default_of("urls", SERVE)
    allow_private_urls: bool = False  # fetch URLs inside the network too (safe_urls.py); off: SSRF-safe
    url_timeout_s: float = default_of("url_timeout_s", SERVE)
    match_index: str | None = default_of("match_index", SERVE)  # a product index for POST /v1/match
    text: str | None = default_of("text", SERVE)  # --text: the model must read text (fusion.read_text_columns)
    max_title_chars: int = default_of("max_title_chars", SERVE)

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


@dataclass
class Services:
    options: ServeOptions
    model: Model
    name: str  # the model's name in answers: its run directory's or file's name
    history: History
    metrics: Metrics
    batcher: MicroBatcher
    products: Any = None  # a ProductIndex (support/product_index.py) when started with --match-index
    http: AsyncSafeClient | None = None  # set while the app runs (lifespan)

    @property
    def client(self) -> AsyncSafeClient:
        if self.http is None:
            raise RuntimeError("the HTTP client exists only while the app runs (its lifespan)")
        return self.http


def start_services(model_path: str | Path, options: ServeOptions, backend: str = "auto") -> Services:
    """Load the model (and the product index) and open the history database; errors are CatalensErrors."""
    model = Model.load(model_path, backend=backend, latency=True)
    read_text_columns(model, options.text)
    metrics = Metrics()
    batcher = MicroBatcher(model, options.max_batch, options.max_wait_ms,
                           observe_batch=metrics.batch_size.observe, observe_queue=metrics.queue_depth.set)
    products = None
    if options.match_index:
        from catalens.support.product_index import load_index, model_digest

        products = load_index(options.match_index)
        if model.module is None or products.meta["weights_sha256"] != model_digest(model):
            raise CatalensError(f"the product index {options.match_index} was built with another model "
                                f"({products.meta['model']}): serve that model, or build the index with this one")
    if model.text is not None or model.targets is not None or products is not None:  # the feature network is
        # exported once, before any request
        height, width = model.preprocessing.input_size
        model.image_features(torch.zeros(1, model.preprocessing.channels, height, width, dtype=torch.uint8))
    return Services(options, model, Path(model_path).name, History(options.db), metrics, batcher, products)
