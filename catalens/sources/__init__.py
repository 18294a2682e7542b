"""Data sources: each turns a data spec into a Catalog. A new source is one module and one registry entry.

Specs: a folder path; `fashion-mnist`, `fashion-mnist:DIR`, `mnist:DIR`.
"""

from __future__ import annotations

from collections.abc import Callable

from ..catalog import Catalog
from .folder import open_folder
from .idx import open_idx

# prefix -> opener(rest_of_spec, **options); the folder source is the fallback for plain paths.
SOURCES: dict[str, Callable[..., Catalog]] = {
    "fashion-mnist": lambda rest, **_: open_idx("fashion-mnist", rest or None),
    "mnist": lambda rest, **_: open_idx("mnist", rest or None),  # needs mnist:DIR (no download)
}


def register_source(prefix: str):
    """Decorator: `@register_source("bson")` makes `bson:PATH` specs open with the decorated function."""

    def decorate(function):
        SOURCES[prefix] = function
        return function

    return decorate


def source_prefix(spec: str) -> str | None:
    """The registered source a spec names (`bson:...` -> "bson"), or None for a plain folder path."""
    prefix = str(spec).partition(":")[0]
    return prefix if prefix in SOURCES else None


def open_source(spec: str, verify: bool = False) -> Catalog:
    """Open a data spec as a raw Catalog (no mapping, filtering or splitting)."""
    prefix = source_prefix(spec)
    if prefix:
        return SOURCES[prefix](str(spec).partition(":")[2], verify=verify)
    return open_folder(spec, verify=verify)
