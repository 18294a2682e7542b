"""catalens: classify e-commerce product images.

    import catalens
    result = catalens.train(data="fashion-mnist", model="fastcnn", out="runs/fm", epochs=15)
    metrics = catalens.evaluate("runs/fm", data="fashion-mnist", out="runs/fm/eval")
    model = catalens.Model.load("runs/fm")
    model.predict(["shoe.jpg"], k=3)   # [[("Sneaker", 0.93), ("Sandal", 0.05), ...]]

The package follows the data flow, one subpackage per stage, each importing only earlier ones (tests/
test_layers.py), after the core modules (errors, progress, files, cache, options, extras, plots): data (sources,
Catalog, labels, splits, image identity, dedupe, leakage, downloads), loading (preprocessing, augmentation,
batches), models (registry, CNNs, timm, pretrained weights, freezing, features, text and fusion heads, neighbours),
rundir (layout, model card, Model), engine (config, trainer, training modes, auto recipe, calibration, metrics),
inference (predict, products, submission, Ray), report (evaluate, stats), support (what the apps share: file
placement, embeddings, the product index), apps (sort, zoomed, demo, serve, audit, match), and cli.py over them.

The names below are imported on first use, so importing a light module (the BSON index, the CLI for --help)
does not pay for importing PyTorch.
"""

import sys
from importlib import import_module
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _installed_version
from types import ModuleType

try:
    __version__ = _installed_version("catalens")  # one source of truth: pyproject.toml's version, as installed
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

_LAZY = {"Catalog": "data.catalog", "DataOptions": "data", "load_catalog": "data", "CatalensError": "errors",
         "evaluate": "report.evaluate", "predict": "inference.predict", "Model": "rundir.run", "train": "engine.train"}
__all__ = [*_LAZY, "__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'catalens' has no attribute {name!r}")


class _Package(ModuleType):
    """`catalens.train`, `.evaluate` and `.predict` are the functions: importing the submodules of the same
    name (which makes Python set them as package attributes) must not hide them."""

    def __setattr__(self, name, value):
        if name in _LAZY and isinstance(value, ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
