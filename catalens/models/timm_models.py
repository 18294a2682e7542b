"""Any timm architecture by name, input channels and class count adapted (weights: issue 3)."""

from __future__ import annotations

import os

from torch import nn

from ..errors import CatalensError


def create_timm_model(name: str, num_classes: int, in_chans: int) -> nn.Module:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never wait on a hub this machine cannot reach
    import timm

    if not timm.is_model(name):
        close = timm.list_models(f"*{name}*")[:8]
        hint = f"; close matches: {', '.join(close)}" if close else "; see timm.list_models()"
        raise CatalensError(f"timm has no architecture {name!r}{hint}")
    return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans)


def timm_input_size(name: str) -> tuple[int, int]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import timm

    if not timm.is_model(name):
        raise CatalensError(f"timm has no architecture {name!r}; see timm.list_models()")
    config = timm.get_pretrained_cfg(name)
    size = getattr(config, "input_size", (3, 224, 224)) if config else (3, 224, 224)
    return (size[1], size[2])
