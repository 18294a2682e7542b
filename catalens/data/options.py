"""DataOptions: what to do with a source's items before training or evaluation (all saved in a run's config);
read by the sources, built from the data options of options.py. Its own module so that the sources and
data/__init__.py import it without importing each other."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from catalens.options import data_options, make_options_class

if TYPE_CHECKING:  # built at run time from the option schema; to a type checker, a class of dynamic fields
    class DataOptions:
        """What to do with a source's items before training or evaluation: one field per data option of
        options.py (labels, limits, splits, columns, ...)."""

        __dataclass_fields__: ClassVar[dict[str, Any]]
        def __init__(self, **options: Any) -> None: ...
        def __getattr__(self, name: str) -> Any: ...
        def __setattr__(self, name: str, value: Any) -> None: ...
else:
    DataOptions = make_options_class(
        "DataOptions", data_options(), "What to do with a source's items before training or evaluation "
        "(options.py).", {"__module__": __name__})
