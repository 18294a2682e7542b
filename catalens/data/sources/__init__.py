"""Data sources: each turns a data spec into a Catalog. A new source is one module and one registry entry.

Specs: a folder path; `fashion-mnist`, `fashion-mnist:DIR`, `mnist:DIR`; `bson:FILE` (a product dump);
`csv:FILE` (a marketplace export); `sqlite:///FILE`, `postgresql+psycopg://...` (a SQL product database);
`shards:DIR` or `shards:s3://...` (tar shards written by `catalens shard`).
The heavier sources are imported only when a spec names them.
An opener is called as opener(rest_of_spec, verify=..., options=DataOptions).
"""

from __future__ import annotations

from collections.abc import Callable

from catalens.data.catalog import Catalog
from catalens.data.sources.folder import open_folder
from catalens.data.sources.idx import open_idx

# prefix -> opener(rest_of_spec, **options); the folder source is the fallback for plain paths.
SOURCES: dict[str, Callable[..., Catalog]] = {
    "fashion-mnist": lambda rest, **_: open_idx("fashion-mnist", rest or None),
    "mnist": lambda rest, **_: open_idx("mnist", rest or None),  # needs mnist:DIR (no download)
}


def _open_bson(rest: str, **options) -> Catalog:
    from catalens.data.sources.bson_dump import open_bson  # imported on use: it loads numba and pymongo's bson

    return open_bson(rest, **options)


SOURCES["bson"] = _open_bson


def _open_csv(rest: str, **options) -> Catalog:
    from catalens.data.sources.marketplace_csv import open_csv

    return open_csv(rest, **options)


def _open_sql(scheme: str):
    def opener(rest: str, **options) -> Catalog:
        from catalens.data.sources.sql import open_sql

        return open_sql(f"{scheme}:{rest}", **options)

    return opener


SOURCES["csv"] = _open_csv


def _open_shards(rest: str, **options) -> Catalog:
    from catalens.data.sources.shards import open_shards

    return open_shards(rest, **options)


SOURCES["shards"] = _open_shards
for _scheme in ("sqlite", "postgresql", "postgresql+psycopg"):
    SOURCES[_scheme] = _open_sql(_scheme)


def register_source(prefix: str):
    """Decorator: `@register_source("shop")` makes `shop:PATH` specs open with the decorated function."""

    def decorate(function):
        SOURCES[prefix] = function
        return function

    return decorate


def source_prefix(spec: str) -> str | None:
    """The registered source a spec names (`bson:...` -> "bson"), or None for a plain folder path."""
    prefix = str(spec).partition(":")[0]
    return prefix if prefix in SOURCES else None


def open_source(spec: str, verify: bool = False, options=None) -> Catalog:
    """Open a data spec as a raw Catalog (no mapping or splitting; sources that sample at index time, such as
    BSON, apply the class filters in `options` themselves and set `catalog.filtered`)."""
    prefix = source_prefix(spec)
    if prefix:
        return SOURCES[prefix](str(spec).partition(":")[2], verify=verify, options=options)
    return open_folder(spec, verify=verify, options=options)
