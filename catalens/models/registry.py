"""The registry of catalens's own models: name -> builder, description, default input size."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from catalens.options import BY_NAME


@dataclass
class ModelEntry:
    name: str
    build: Callable[..., nn.Module]  # build(num_classes, in_chans, input_size) -> nn.Module
    description: str
    default_input_size: tuple[int, int] | None = None  # None: the data's native size (or 224 for photos)


MODELS: dict[str, ModelEntry] = {}
DEFAULT_MODEL = BY_NAME["model"].default  # fastcnn


def register_model(name: str, description: str, default_input_size: tuple[int, int] | None = None):
    """Decorator registering a builder `fn(num_classes, in_chans, input_size) -> nn.Module` under `name`."""

    def decorate(build):
        MODELS[name] = ModelEntry(name, build, description, default_input_size)
        return build

    return decorate
