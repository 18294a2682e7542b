"""The four ways `catalens train` trains, one small class each behind one interface (`Mode.prepare`), sharing the
Trainer, its callbacks and the run directory (train.py):

- FineTune: images through the network every epoch, all of it or its last stages (--freeze), optionally from a
  classifier first fitted by logistic regression on the pretrained features (LP-FT);
- CachedHead: the backbone stays frozen, so its features are computed once and the classifier trains by SGD on
  them (--head sgd);
- LinearHead: the same features, and the classifier fitted in closed form, a well-regularised logistic regression
  (the default head of a frozen pretrained backbone; --text heads are fitted beside it);
- CachedPrefix: a fixed number of last stages trains (--freeze N) on the frozen first stages' activations,
  computed once.

`choose_mode` picks one from the config; the three cached modes run on one process under torchrun.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from catalens.data.catalog import Catalog
from catalens.data.splits import cv_groups
from catalens.engine.config import TrainConfig
from catalens.errors import CatalensError
from catalens.models.features import FeatureBatches
from catalens.models.finetune import FreezePlan
from catalens.models.prefix_cache import Prefix, Suffix, batchnorm_eval, split_point, splittable
from catalens.models.timm_models import classifier_of, linear_classifier_of
from catalens.progress import info, warn

Inputs = Callable[[torch.Tensor], torch.Tensor]  # a batch as loaded -> the network's input


@dataclass
class Job:
    """What every mode starts from: the network as built, its freezing plan, and the image batches."""
    config: TrainConfig
    module: nn.Module
    plan: FreezePlan
    preprocessing: Any
    device: torch.device
    num_classes: int
    train_catalog: Catalog
    train_batches: Any
    val_batches: Any
    image_inputs: Inputs  # uint8 batch -> normalised network input
    augment: Callable
    texts: Any  # --text columns and titles, or None
    start_epoch: int


@dataclass
class Setup:
    """What the trainer runs, and what the model card says about it."""
    net: nn.Module  # what is trained and evaluated
    train_batches: Any
    val_batches: Any
    train_inputs: Inputs
    eval_inputs: Inputs
    head: str = "sgd"  # the card's training.head
    linear: nn.Linear | None = None  # LinearHead: the classifier layer fitted (--text heads are fitted beside it)
    cached_features: bool = False
    prefix_blocks: int | None = None
    fitted: Any = None  # LinearHead: the closed-form fit (linear_head.LinearFit); no epochs then
    failures: dict = field(default_factory=dict)  # image ref -> why it could not be read while caching
    freeze_hook: Callable | None = None  # run after the freezing schedule each epoch
    probe: Any = None  # FineTune from a linear probe: the pretrained features it was fitted on (FeatureBatches)


def identity(batch: torch.Tensor) -> torch.Tensor:
    return batch


class FineTune:
    single_process = False

    def prepare(self, job: Job) -> Setup:
        no_text(job)
        config, module = job.config, job.module
        setup = Setup(module, job.train_batches, job.val_batches,
                      lambda images: job.image_inputs(job.augment(images.float().div_(255))), job.image_inputs)
        # only for a full fine-tune (--freeze none): partial fine-tunes keep their behaviour and cost
        if (config.pretrained and config.head == "linear" and config.freeze == "none"
                and config.model.startswith("timm:") and job.start_epoch == 0):
            probe, _, _ = cache_features(job, with_validation=False)
            probe.groups = cv_groups(job.train_catalog, config.group_by)[probe.rows.numpy()]
            fitted = fit_classifier(linear_classifier_of(module), probe, job.num_classes, config, probe.groups)
            info(f"classifier initialised by a logistic regression on the pretrained features (C={fitted.C:g}); "
                 "fine-tuning the whole network")
            setup.head = f"fine-tuned from a linear probe (C={fitted.C:g})"
            setup.probe = probe
        return setup


class CachedHead:
    single_process = True

    def prepare(self, job: Job) -> Setup:
        no_text(job)
        train, val, failed = cache_features(job)
        return Setup(classifier_of(job.module), train, val, identity, identity, cached_features=True,
                     failures=dict(failed))


class LinearHead:
    single_process = True

    def prepare(self, job: Job) -> Setup:
        train, val, failed = cache_features(job)
        train.groups = cv_groups(job.train_catalog, job.config.group_by)[train.rows.numpy()]
        head = linear_classifier_of(job.module)  # its weights are fitted in closed form
        fitted = fit_classifier(head, train, job.num_classes, job.config, train.groups)
        return Setup(classifier_of(job.module), train, val, identity, identity, head=fitted.describe(),
                     linear=head, cached_features=True, fitted=fitted, failures=dict(failed))


class CachedPrefix:
    single_process = True

    def __init__(self, first_block: int):
        self.first_block = first_block

    def prepare(self, job: Job) -> Setup:
        no_text(job)
        config, module = job.config, job.module
        job.module.eval()
        train, val, failed = cached_batches(job, Prefix(module, self.first_block), flip=config.augment == "light",
                                            what="frozen layers", dtype=torch.float16, val_batch_size=128)
        net = Suffix(module, self.first_block)
        head, probe = "sgd", None
        if config.head == "linear" and job.start_epoch == 0:  # linear probe, then fine-tune (LP-FT): the new
            # classifier starts fitted (a resumed run's comes from its checkpoint)
            probe = FeatureBatches(net.pooled_features(train.features), train.labels, config.batch_size, True,
                                   config.seed)
            probe.rows = train.rows  # --targets: the other targets' heads start from probes too (engine/joint.py)
            probe.groups = cv_groups(job.train_catalog, config.group_by)[train.rows.numpy()]  # as LinearHead's
            fitted = fit_classifier(linear_classifier_of(module), probe, job.num_classes, config, probe.groups)
            info(f"classifier initialised by a logistic regression on the pretrained features (C={fitted.C:g}); "
                 "fine-tuning")
            head = f"fine-tuned from a linear probe (C={fitted.C:g})"
        activations: Inputs = lambda batch: batch.float().contiguous(memory_format=torch.channels_last)  # noqa: E731
        return Setup(net, train, val, activations, activations, head=head, prefix_blocks=self.first_block,
                     failures=dict(failed), freeze_hook=lambda: batchnorm_eval(module), probe=probe)


def choose_mode(config: TrainConfig, plan: FreezePlan, module: nn.Module) -> FineTune | CachedHead | LinearHead | \
        CachedPrefix:
    if use_feature_cache(config, plan):
        return LinearHead() if config.head == "linear" else CachedHead()
    first = prefix_cache_point(config, plan, module)
    return CachedPrefix(first) if first is not None else FineTune()


def no_text(job: Job) -> None:
    if job.texts is not None:
        raise CatalensError("--text fits its heads on cached backbone features: give --pretrained with --freeze "
                            "backbone and the linear head (no heavy --augment), or no model flags at all")


def use_feature_cache(config: TrainConfig, plan: FreezePlan) -> bool:
    """Head-only training on cached features: by default whenever the whole backbone stays frozen and the
    augmentation is at most a flip (the cache holds the flipped view); --no-cache-features opts out."""
    head_only = plan.active and all(plan.trainable_stages(epoch) == 0 for epoch in range(config.epochs))
    if not head_only or config.cache_features is False:
        return False
    if config.augment not in ("none", "light"):
        if config.cache_features:
            warn(f"cached features hold the original and flipped images only: the {config.augment} preset is "
                 "not applied (drop --cache-features to apply it)")
            return True
        return False
    return True


def prefix_cache_point(config: TrainConfig, plan: FreezePlan, module: nn.Module) -> int | None:
    """The first trained block when partial fine-tuning runs on cached prefix activations (prefix_cache.py): by
    default whenever a fixed number of last stages trains (--freeze N, no gradual unfreezing) on a timm
    EfficientNet/MobileNet-style backbone and the augmentation is at most a flip; else None."""
    if not plan.active or not plan.base or config.unfreeze_every or config.cache_features is False:
        return None
    if not config.model.startswith("timm:") or (config.cache_features is None and not splittable(module)):
        return None
    if config.augment not in ("none", "light"):
        if not config.cache_features:
            return None
        warn(f"cached activations hold the original and flipped images only: the {config.augment} preset is "
             "not applied (drop --cache-features to apply it)")
    return split_point(module, plan.base)


def cache_features(job: Job, with_validation: bool = True):
    """Backbone features of the train (and validation) images, once, as batches for the classifier."""
    flip = job.config.augment == "light" and not getattr(job.module, "mirror", False)  # /mirror flips inside
    return cached_batches(job, None, flip=flip, what="features", dtype=torch.float32,
                          val_batch_size=max(job.config.batch_size, 512), with_validation=with_validation)


def cached_batches(job: Job, extractor, flip: bool, what: str, dtype: torch.dtype, val_batch_size: int,
                   with_validation: bool = True):
    """What `extractor` computes (default: the pooled features) for the train images, with their mirror images
    when `flip`, and for the validation images: (train batches, validation batches or None, failures)."""
    from catalens.models.features import extract_features, feature_function

    config, module, device = job.config, job.module, job.device
    function = feature_function(module, job.preprocessing, device, extractor=extractor)
    rows: list = []
    features, labels, failures = extract_features(module, job.train_batches, job.image_inputs, device, flip=flip,
                                                  description=f"{what} (train)", features=function, dtype=dtype,
                                                  rows=rows)
    train = FeatureBatches(features, labels, config.batch_size, shuffle=True, seed=config.seed,
                           balanced=config.balanced_sampling)
    train.rows = torch.cat(rows) if rows else torch.empty(0, dtype=torch.int64)
    val = None
    if job.val_batches is not None and with_validation:
        rows = []
        val_features, val_labels, val_failures = extract_features(module, job.val_batches, job.image_inputs, device,
                                                                  flip=False, description=f"{what} (val)",
                                                                  features=function, dtype=dtype, rows=rows)
        failures += val_failures
        val = FeatureBatches(val_features, val_labels, val_batch_size, shuffle=False, seed=config.seed)
        val.rows = torch.cat(rows) if rows else torch.empty(0, dtype=torch.int64)
    return train, val, [(str(ref), reason) for ref, reason in failures]


def fit_classifier(head: nn.Linear, train_batches, num_classes: int, config: TrainConfig,
                   groups: np.ndarray | None = None):
    """Fit the linear classifier on the cached training features (linear_head.py) and load it into `head`;
    `groups` (one per cached item) stay together in the cross-validation folds."""
    from catalens.models.linear_head import fit_linear_head

    fitted = fit_linear_head(train_batches.features, train_batches.labels, num_classes, seed=config.seed,
                             balanced=config.class_weights, groups=groups)
    with torch.no_grad():
        head.weight.copy_(fitted.weight.to(head.weight.device))
        head.bias.copy_(fitted.bias.to(head.bias.device))
    return fitted
