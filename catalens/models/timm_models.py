"""Any timm architecture by name (`timm:<name>`, or the bare name when catalens has no model of that name):
input channels and class count adapted, the backbone's pretrained preprocessing, and its stages for
freezing (weights themselves: pretrained.py)."""

from __future__ import annotations

import difflib
import os

from torch import nn

from catalens.errors import CatalensError

# The backbones the docs and tests name; any other timm architecture works too.
LISTED_BACKBONES = ["tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2", "mobilenetv2_100",
                    "efficientnet_b0", "resnet50", "inception_v3", "vgg16"]


def import_timm():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never wait on a hub this machine cannot reach (pretrained.py
    import timm  # decides when the hub may be asked)

    return timm


def is_timm_name(name: str) -> bool:
    return import_timm().is_model(name)


def check_timm_name(name: str) -> None:
    if import_timm().is_model(name):
        return
    close = close_timm_names(name)
    hint = f"; did you mean {', '.join(close)}?" if close else "; `catalens models` lists the usual backbones"
    raise CatalensError(f"unknown backbone {name!r}{hint}")


def close_timm_names(name: str, n: int = 5) -> list[str]:
    timm = import_timm()
    return difflib.get_close_matches(name, timm.list_models(), n=n, cutoff=0.6) or timm.list_models(f"*{name}*")[:n]


def create_timm_model(name: str, num_classes: int, in_chans: int) -> nn.Module:
    check_timm_name(name)
    return import_timm().create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans)


def timm_preprocessing(name: str) -> dict:
    """The backbone's pretrained preprocessing: input_size (h, w), interpolation, crop_pct, mean, std."""
    check_timm_name(name)
    config = import_timm().get_pretrained_cfg(name)
    config = config.to_dict() if config is not None else {}
    size = config.get("input_size") or (3, 224, 224)
    return {
        "input_size": (size[1], size[2]),
        "interpolation": config.get("interpolation") or "bilinear",
        "crop_pct": float(config.get("crop_pct") or 1.0),
        "mean": tuple(config.get("mean") or (0.485, 0.456, 0.406)),
        "std": tuple(config.get("std") or (0.229, 0.224, 0.225)),
    }


def timm_input_size(name: str) -> tuple[int, int]:
    return timm_preprocessing(name)["input_size"]


def classifier_of(module: nn.Module) -> nn.Module:
    """The final classification layer (what a new class count replaces): a Linear layer for most backbones, a
    1x1 convolution or a normalised linear layer for some (DLA, LeViT)."""
    if hasattr(module, "get_classifier"):
        return module.get_classifier()
    raise CatalensError(f"{type(module).__name__} has no classifier to train on its own; use --freeze none")


def linear_classifier_of(module: nn.Module) -> nn.Linear:
    """The classifier where it must be one Linear layer: the heads fitted in closed form (linear probe, --text
    heads, distillation) write its weight and bias."""
    layer = classifier_of(module)
    if not isinstance(layer, nn.Linear):
        raise CatalensError(f"{type(module).__name__}'s classifier is a {type(layer).__name__}, not a linear layer: "
                            "its head cannot be fitted on cached features; use --head sgd or --freeze none")
    return layer


def backbone_stages(module: nn.Module) -> list[list[str]]:
    """Parameter names of the backbone, grouped into stages from input to output (stem first), the final
    classifier left out: timm's own coarse grouping, the one its layer-wise learning-rate decay uses."""
    from timm.models import group_parameters

    head = {id(parameter) for parameter in classifier_of(module).parameters()}
    names = {name for name, parameter in module.named_parameters() if id(parameter) not in head}
    groups = group_parameters(module, module.group_matcher(coarse=True))
    stages = [[name for name in members if name in names] for _, members in sorted(groups.items())]
    return [stage for stage in stages if stage]
