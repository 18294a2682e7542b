"""Feature ensembles: the pooled features of several pretrained backbones, each at its own input size,
concatenated, with one linear classifier on top (`ensemble:A+B[/mirror]`).

    ensemble:tf_efficientnet_lite0+tf_efficientnet_lite2          two backbones
    ensemble:tf_efficientnet_lite0@288+tf_efficientnet_lite2       a member at another input size
    ensemble:tf_efficientnet_lite1/mirror                          one backbone, features of the photo and its
                                                                   mirror image averaged (in the model: predict,
                                                                   export and serve do the same)

The network takes the largest member's input; smaller members see it resized (bilinear) inside the network, so
one preprocessing serves all. Members keep their pretrained weights (they are frozen: only the classifier trains).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from catalens.errors import CatalensError

PREFIX = "ensemble:"
MIRROR = "/mirror"


def parse(name: str) -> tuple[list[tuple[str, int | None]], bool]:
    """`ensemble:a@288+b/mirror` -> ([("a", 288), ("b", None)], True)."""
    body = name.removeprefix(PREFIX)
    mirror = body.endswith(MIRROR)
    body = body.removesuffix(MIRROR)
    members = []
    for part in body.split("+"):
        backbone, _, size = part.strip().partition("@")
        if not backbone:
            raise CatalensError(f"{name}: empty member; write ensemble:BACKBONE[@SIZE]+BACKBONE[@SIZE][/mirror]")
        if size and not (size.isdigit() and 32 <= int(size) <= 1024):
            raise CatalensError(f"{name}: member size {size!r} must be a number of pixels (32-1024)")
        members.append((backbone.removeprefix("timm:"), int(size) if size else None))
    return members, mirror


def canonical(name: str) -> str:
    from catalens.models.timm_models import check_timm_name

    members, mirror = parse(name)
    for backbone, _ in members:
        check_timm_name(backbone)
    check_same_input(name, [backbone for backbone, _ in members])
    text = "+".join(f"{backbone}@{size}" if size else backbone for backbone, size in members)
    return PREFIX + text + (MIRROR if mirror else "")


def check_same_input(name: str, backbones: list[str]) -> None:
    """One preprocessing serves every member: they must agree on channels (grey vs RGB) and normalisation."""
    from catalens.models.timm_models import import_timm, timm_preprocessing

    def expects(backbone: str) -> tuple:
        config = import_timm().get_pretrained_cfg(backbone)
        channels = (config.to_dict().get("input_size") or (3,))[0] if config is not None else 3
        data = timm_preprocessing(backbone)
        return channels, tuple(round(v, 3) for v in data["mean"]), tuple(round(v, 3) for v in data["std"])

    first = expects(backbones[0])
    for backbone in backbones[1:]:
        other = expects(backbone)
        if other != first:
            what = "input channels" if other[0] != first[0] else "input normalisation (mean/std)"
            raise CatalensError(f"{name}: members disagree on {what}: {backbones[0]} expects {first}, {backbone} "
                                f"{other} (channels, mean, std); combine backbones that share their preprocessing, "
                                "such as tf_efficientnet_lite0/1/2")


def member_sizes(name: str) -> list[int]:
    from catalens.models.timm_models import timm_input_size

    return [size or timm_input_size(backbone)[0] for backbone, size in parse(name)[0]]


def input_backbone(name: str) -> tuple[str, int]:
    """The member whose preprocessing the ensemble uses: the one with the largest input."""
    members, _ = parse(name)
    sizes = member_sizes(name)
    index = max(range(len(members)), key=lambda i: sizes[i])
    return members[index][0], sizes[index]


class FeatureEnsemble(nn.Module):
    def __init__(self, name: str, num_classes: int, in_chans: int = 3):
        super().__init__()
        from catalens.models.timm_models import import_timm

        timm = import_timm()
        members, self.mirror = parse(name)
        self.names = [backbone for backbone, _ in members]
        self.sizes = member_sizes(name)
        self.backbones = nn.ModuleList(
            timm.create_model(backbone, pretrained=False, num_classes=0, in_chans=in_chans) for backbone in self.names)
        self.num_features = sum(backbone.num_features for backbone in self.backbones)
        self.classifier = nn.Linear(self.num_features, num_classes)

    def member_features(self, index: int, images: torch.Tensor) -> torch.Tensor:
        size = self.sizes[index]
        if tuple(images.shape[-2:]) != (size, size):
            images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
        return self.backbones[index](images)

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """Each member's features, concatenated; with /mirror, the photo and its mirror image go through each
        member as one batch (one copy of each network in an exported graph: Lite0+1+2 exported in 27 s instead of
        42 s with one pass per view) and their features are averaged."""
        views = torch.cat([images, images.flip(3)]) if self.mirror else images
        features = torch.cat([self.member_features(index, views) for index in range(len(self.backbones))], dim=1)
        if not self.mirror:
            return features
        count = images.shape[0]
        return (features[:count] + features[count:]) / 2

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return features if pre_logits else self.classifier(features)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(images))

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def group_matcher(self, coarse: bool = False) -> dict:
        return {"backbones": r"^backbones"}  # one stage: the members train together or not at all


def check_freeze(name: str, freeze: str, unfreeze_every) -> None:
    if str(freeze) != "backbone" or unfreeze_every:
        raise CatalensError(f"{name} trains its classifier only: use --freeze backbone (the default for ensembles)")
