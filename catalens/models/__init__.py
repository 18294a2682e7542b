"""Models by name, like timm's registry: `cnn3`, `fastcnn` (the default for small grayscale images)
and any timm architecture as `timm:<name>`."""

from __future__ import annotations

import difflib

from torch import nn

from catalens.errors import CatalensError
from catalens.models.registry import DEFAULT_MODEL, MODELS, ModelEntry, register_model  # noqa: F401 (the registry's API)


def model_names() -> list[str]:
    return sorted(MODELS) + ["timm:<name>", "ensemble:<name>+<name>[/mirror]"]


def canonical_model_name(name: str) -> str:
    """`fastcnn` stays `fastcnn`; a timm architecture, bare or prefixed, becomes `timm:<name>`; an unknown
    name is a one-line error with the closest names."""
    if name in MODELS:
        return name
    if name.startswith("ensemble:"):
        from catalens.models.ensemble import canonical

        return canonical(name)
    from catalens.models.timm_models import check_timm_name, is_timm_name

    bare = name.removeprefix("timm:")
    if name.startswith("timm:") or is_timm_name(bare):
        check_timm_name(bare)
        return f"timm:{bare}"
    from catalens.models.timm_models import close_timm_names

    close = difflib.get_close_matches(name, list(MODELS), n=3) + close_timm_names(name)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise CatalensError(f"unknown model {name!r}; {hint}choose one of: {', '.join(model_names())} "
                        "(`catalens models` lists them)")


def create_model(name: str, num_classes: int, in_chans: int = 3, input_size: tuple[int, int] = (224, 224)) -> nn.Module:
    name = canonical_model_name(name)
    if name.startswith("ensemble:"):
        from catalens.models.ensemble import FeatureEnsemble

        return FeatureEnsemble(name, num_classes, in_chans)
    if name.startswith("timm:"):
        from catalens.models.timm_models import create_timm_model

        return create_timm_model(name.removeprefix("timm:"), num_classes, in_chans)
    return MODELS[name].build(num_classes=num_classes, in_chans=in_chans, input_size=input_size)


def default_input_size(name: str, native_size: tuple[int, int] | None) -> tuple[int, int]:
    """The input size a model trains at from scratch: its own default, else the data's native size, else 224
    (a pretrained backbone uses its pretrained size: train.make_preprocessing)."""
    name = canonical_model_name(name)
    if name.startswith("ensemble:"):
        from catalens.models.ensemble import input_backbone

        return (input_backbone(name)[1],) * 2
    if name.startswith("timm:"):
        from catalens.models.timm_models import timm_input_size

        return native_size or timm_input_size(name.removeprefix("timm:"))
    entry = MODELS.get(name)
    if entry and entry.default_input_size:
        return entry.default_input_size
    return native_size or (224, 224)


from catalens.models import cnn  # noqa: E402,F401  (registers the built-in models)
