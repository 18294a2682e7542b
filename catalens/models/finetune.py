"""Fine-tuning a backbone: which stages train (`--freeze none|backbone|N`), gradual unfreezing
(`--unfreeze-every E`), separate learning rates for head and backbone, and frozen BatchNorm statistics in
the frozen part (a frozen stage must behave as it did in pretraining, not drift with this data's batches)."""

from __future__ import annotations

from torch import nn

from catalens.errors import CatalensError
from catalens.models.timm_models import backbone_stages, classifier_of


class FreezePlan:
    """Stages of the backbone (input first) and how many of the last ones train in a given epoch."""

    def __init__(self, module: nn.Module, architecture: str, freeze: str, unfreeze_every: int | None):
        self.module = module
        self.unfreeze_every = unfreeze_every
        if freeze == "none" and not unfreeze_every:
            self.stages, self.base = [], None
            return
        if architecture.startswith("ensemble:"):
            from catalens.models.ensemble import check_freeze

            check_freeze(architecture, freeze, unfreeze_every)
        elif not architecture.startswith("timm:"):
            raise CatalensError(f"--freeze and --unfreeze-every need a timm backbone (e.g. tf_efficientnet_lite0); "
                                f"{architecture} is trained whole")
        self.stages = backbone_stages(module)
        self.base = 0 if freeze in ("backbone", "none") else min(int(freeze), len(self.stages))
        self.parameters = dict(module.named_parameters())

    @property
    def active(self) -> bool:
        return self.base is not None

    def trainable_stages(self, epoch: int) -> int:
        """How many of the last backbone stages train in `epoch` (0-based); all when nothing is frozen."""
        if not self.active:
            return len(self.stages)
        extra = epoch // self.unfreeze_every if self.unfreeze_every else 0
        return min(len(self.stages), self.base + extra)

    def apply(self, epoch: int) -> int:
        """Set requires_grad for `epoch`; returns the number of trainable backbone stages."""
        count = self.trainable_stages(epoch)
        if self.active:
            for index, stage in enumerate(self.stages):
                for name in stage:
                    self.parameters[name].requires_grad_(index >= len(self.stages) - count)
        return count

    def freeze_batchnorm(self) -> None:
        """Put BatchNorm layers whose parameters are all frozen in eval mode (call after module.train())."""
        if not self.active:
            return
        for layer in self.module.modules():
            if isinstance(layer, nn.modules.batchnorm._BatchNorm):
                if all(not parameter.requires_grad for parameter in layer.parameters()):
                    layer.eval()

    def describe(self, epoch: int) -> str:
        count = self.trainable_stages(epoch)
        if count == 0:
            return "backbone frozen: training the classifier only"
        if count == len(self.stages):
            return "training the whole network"
        return f"training the last {count} of {len(self.stages)} backbone stages and the classifier"


def head_and_backbone_parameters(module: nn.Module, architecture: str) -> tuple[list, list]:
    """(classifier parameters, all others); the classifier of a catalens CNN is its last Linear layer."""
    if architecture.startswith(("timm:", "ensemble:")):
        head = list(classifier_of(module).parameters())
    else:
        linear = [layer for layer in module.modules() if isinstance(layer, nn.Linear)]
        head = list(linear[-1].parameters()) if linear else []
    ids = {id(parameter) for parameter in head}
    return head, [parameter for parameter in module.parameters() if id(parameter) not in ids]
