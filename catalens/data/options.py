"""DataOptions: what to do with a source's items before training or evaluation (all saved in a run's config);
read by the sources, built from the data options of options.py. Its own module so that the sources and
data/__init__.py import it without importing each other."""

from __future__ import annotations

from catalens.options import data_options, make_options_class

DataOptions = make_options_class(
    "DataOptions", data_options(), "What to do with a source's items before training or evaluation (options.py).",
    {"__module__": __name__})
