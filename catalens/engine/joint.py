"""`catalens train --targets` on a fine-tuned network: the other targets' heads train jointly with it.

Every target gets a linear head on the network's pooled features (what its own classifier reads); each step's
loss is the own label's cross-entropy plus every other target's, over the photos of the batch that have a value
for it, each weighted by log(own classes) / log(its classes) so that every target starts with the same loss at
chance: equal influence, whatever its number of values. When the network's classifier starts from a linear probe
on the pretrained features (LP-FT, the default of a pretrained full fine-tune), every head does. The heads of the
best epoch are kept (as the network's weights are), calibrated on the validation split and stored like the
frozen-feature heads (engine/targets.py): predict, sort, serve and evaluate read them unchanged, since they read
the same pooled features.

The same on cached activations (`--freeze N`, models/prefix_cache.py): the JointNet wraps the Suffix that
trains the last stages, and the heads read the pooled features it computes.

One process (torchrun is refused in one line), no --tags (they are fitted on cached features)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from catalens.data.catalog import Catalog
from catalens.data.targets import column, present
from catalens.engine.trainer import Callback
from catalens.errors import CatalensError
from catalens.models.features import FeatureBatches, extract_features
from catalens.models.targets import Head
from catalens.models.timm_models import linear_classifier_of
from catalens.rundir.layout import CHECKPOINT_FILE

HEADS_FILE = "joint_heads.safetensors"  # the best epoch's heads (the last epoch's: joint_heads_last.safetensors)
LAST_HEADS_FILE = "joint_heads_last.safetensors"


class JointNet(nn.Module):
    """The network as the trainer sees it: its own logits out, its pooled features kept for the other heads."""

    def __init__(self, module: nn.Module, heads: nn.ModuleList):
        super().__init__()
        self.module, self.heads = module, heads
        self.pooled: torch.Tensor | None = None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.module.forward_features(images)
        self.pooled = self.module.forward_head(features, pre_logits=True)
        return self.module.forward_head(features)


class JointTargets(Callback):
    """The other targets' heads, their labels per training row, the loss they add, and their best epoch."""

    def __init__(self, module: nn.Module, train_catalog: Catalog, names: list[str], out: Path, resume: bool):
        from safetensors.torch import load_file

        self.names = names[1:]  # the first target is the network's own label
        features = linear_classifier_of(module).in_features
        self.classes, self.codes, self.weights, self.given = {}, {}, {}, {}
        own = max(2, len(train_catalog.classes))
        for name in self.names:
            values = train_catalog.table[column(name)].to_numpy(object)
            given = present(values)
            classes = sorted(set(map(str, values[given])))
            if len(classes) < 2:
                raise CatalensError(f"--targets {name}: the training rows hold {len(classes)} value(s) of it; a "
                                    "target needs two or more")
            lookup = {value: i for i, value in enumerate(classes)}
            self.classes[name], self.given[name] = classes, given
            self.codes[name] = torch.tensor([lookup[str(value)] if known else -1
                                             for value, known in zip(values, given)], dtype=torch.int64)
            self.weights[name] = math.log(own) / math.log(len(classes))
        self.heads = nn.ModuleList([nn.Linear(features, len(self.classes[name])) for name in self.names])
        self.out = out
        self.best = None
        self.probe_weights: dict[str, torch.Tensor] = {}  # each head as the linear probe started it
        if resume and (out / CHECKPOINT_FILE).is_file():
            if not (out / LAST_HEADS_FILE).is_file():
                raise CatalensError(f"{out} has a checkpoint but no {LAST_HEADS_FILE}: the other targets' heads are "
                                    "lost; train again without --resume")
            self.heads.load_state_dict(load_file(str(out / LAST_HEADS_FILE)))
            if (out / HEADS_FILE).is_file():
                self.best = load_file(str(out / HEADS_FILE))

    def start_from_probe(self, probe, config) -> None:
        """Each head from a logistic regression on the pretrained features (as the network's own classifier
        starts, LP-FT): a head started at random learned little in a few epochs (gender 0.65 validation accuracy
        after 2 epochs on 192 photos)."""
        from catalens.models.linear_head import fit_linear_head

        rows = probe.rows
        for name, head in zip(self.names, self.heads):
            codes = self.codes[name][rows]
            given = codes >= 0
            groups = getattr(probe, "groups", None)
            fitted = fit_linear_head(probe.features[:, given], codes[given], len(self.classes[name]), seed=config.seed,
                                     balanced=config.class_weights,
                                     groups=None if groups is None else groups[given.numpy()])
            with torch.no_grad():
                head.weight.copy_(fitted.weight.to(head.weight.device))
                head.bias.copy_(fitted.bias.clamp_min(-30).to(head.bias.device))  # a class absent from the rows
            self.probe_weights[name] = fitted.weight.clone()

    def wrap(self, module: nn.Module) -> JointNet:
        return JointNet(module, self.heads)

    def loss(self, net: JointNet, batch) -> torch.Tensor:
        """The other targets' weighted cross-entropies on the batch's pooled features (0 when none has a value)."""
        pooled, total = net.pooled, 0.0
        for name, head in zip(self.names, self.heads):
            labels = self.codes[name][batch.rows].to(pooled.device)
            known = labels >= 0
            if known.any():
                total = total + self.weights[name] * F.cross_entropy(head(pooled[known]).float(), labels[known])
        return total

    def on_epoch_end(self, trainer, epoch, row, metrics):
        """The last epoch's heads, and the best epoch's, on disk (each written whole, then renamed) before
        RunDirectory writes the checkpoint that --resume starts from."""
        from safetensors.torch import save_file

        from catalens.files import atomic_path

        state = {key: value.detach().cpu().contiguous() for key, value in self.heads.state_dict().items()}
        for path, kept in ((self.out / LAST_HEADS_FILE, True), (self.out / HEADS_FILE, trainer.improved)):
            if kept:
                with atomic_path(path) as temporary:
                    save_file(state, str(temporary))
        if trainer.improved:
            self.best = state

    def trained_heads(self, module: nn.Module, train_catalog: Catalog) -> dict[str, Head]:
        """Every target's head at the best epoch: the network's own classifier for the first, then the others."""
        from catalens.engine.targets import counted

        if self.best is not None:
            self.heads.load_state_dict(self.best)
        own = linear_classifier_of(module)
        method = {"method": "trained jointly with the fine-tuned network (sum of the targets' cross-entropies, "
                            "each weighted to equal influence at chance)"}
        heads = {"": Head(list(train_catalog.classes), own.weight.detach().float().cpu().numpy(),
                          own.bias.detach().float().cpu().numpy(), 1.0,
                          {**method, "train_items": len(train_catalog), "missing": 0})}
        for name, head in zip(self.names, self.heads):
            weight = head.weight.detach().float().cpu()
            moved = {"moved_from_probe": round(float((weight - self.probe_weights[name]).norm()
                                                     / self.probe_weights[name].norm().clamp_min(1e-12)), 4)} \
                if name in self.probe_weights else {}  # how far joint training took it from its start
            heads[name] = Head(self.classes[name], weight.numpy(), head.bias.detach().float().cpu().numpy(), 1.0,
                               {**method, "loss_weight": round(self.weights[name], 4), **moved,
                                **counted(name, self.given[name])})
        return heads


def attach_joint(joint: JointTargets | None, setup, config, resume: bool) -> None:
    """After the mode's set-up: the linear probe's pretrained features let go (not kept through the epochs); a
    joint run's heads start from them, and the trainer's network becomes the JointNet."""
    probe, setup.probe = setup.probe, None
    if joint is not None:
        if probe is not None and not resume:
            joint.start_from_probe(probe, config)
        if isinstance(setup.train_batches, FeatureBatches):  # cached activations (--freeze N): a batch's rows are
            # its positions in the cache, so the labels are put in the cache's order
            joint.codes = {name: codes[setup.train_batches.rows] for name, codes in joint.codes.items()}
        setup.net = joint.wrap(setup.net)


def finish_joint_targets(config, joint: JointTargets, module: nn.Module, net: nn.Module, val_batches, eval_inputs,
                         device, train_catalog: Catalog, val_catalog: Catalog | None, card, out: Path) -> None:
    """After training (the best weights loaded): the heads calibrated on validation and stored, with the tree.
    `net` is the trained JointNet; on cached activations (--freeze N) its network is the Suffix that reads them."""
    from catalens.engine.targets import store_targets, target_names, tree_of

    names = target_names(train_catalog)
    heads = joint.trained_heads(module, train_catalog)
    heads = {names[0]: heads.pop(""), **heads}
    values = {name: train_catalog.table["label" if i == 0 else column(name)].to_numpy(object)
              for i, name in enumerate(names)}
    tree, parents = tree_of(config, names, values)
    val_features, val_values = None, {}
    if val_batches is not None and val_catalog is not None and len(val_catalog):
        if isinstance(val_batches, FeatureBatches):
            val_features = net.module.pooled_features(val_batches.features)[0].float().numpy()
            order = val_batches.rows.numpy()
        else:
            rows: list = []
            features, _, _ = extract_features(module, val_batches, eval_inputs, device, flip=False,
                                              description="features (val)", rows=rows)
            val_features = features[0].float().numpy()
            order = torch.cat(rows).numpy() if rows else np.zeros(0, np.int64)
        val_values = {name: val_catalog.table["label" if i == 0 else column(name)].to_numpy(object)[order]
                      for i, name in enumerate(names)}
    store_targets(heads, tree, parents, None, val_features, val_values, card, out)
