"""Training configuration: one dataclass, defaults < YAML config file < explicit arguments.
The resolved config is saved as `config.yaml` in the run directory and can be run again as it is."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

import yaml

from .errors import CatalensError
from .models import DEFAULT_MODEL


@dataclass
class TrainConfig:
    data: str = "fashion-mnist"
    model: str = DEFAULT_MODEL
    out: str = "runs/train"
    # data
    labels: str | None = None  # label mapping file or built-in name (fashion-mnist-groups)
    limit: int | None = None  # train on at most N items (stratified)
    min_per_class: int = 0
    top_classes: int | None = None
    max_per_class: int | None = None
    categories: str | None = None  # bson: category tree CSV [default: category_names.csv beside the file]
    level: int = 3  # bson: category level to classify at (1, 2 or 3 = leaf category_id)
    sample: int | None = None  # bson: a uniform sample of N products, drawn at index time
    images: str | None = None  # csv/sql: image folder (csv default: train_images/ beside the CSV)
    dedupe: bool = False  # csv: remove exact and near-duplicate images
    max_distance: int = 6  # csv: near duplicates within this perceptual-hash distance
    top_groups: int | None = None  # csv: keep the N largest label groups
    label_column: str | None = None  # csv/sql: column holding the labels (sql: required to train)
    columns: str | None = None  # csv/sql: other column or table names, key=name,key=name
    split_ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
    val_fraction: float | None = None  # carve this share of train for validation when data has no val split
    input_size: int | None = None  # square input side; default: the model's or the data's native size
    resize: str = "crop"  # crop (shorter side, then centre crop) | squash (whole image, aspect ignored)
    # transfer learning (timm backbones)
    pretrained: bool = False  # start from ImageNet weights (see pretrained.py for where they come from)
    weights: str | None = None  # a local weights file (.pth/.pt state_dict or .safetensors); implies pretrained
    freeze: str = "none"  # none | backbone (head only) | N (all but the last N backbone stages)
    unfreeze_every: int | None = None  # gradual unfreezing: one more backbone stage trainable every N epochs
    backbone_lr_scale: float | None = None  # backbone lr = lr x this [default: 0.1 when pretrained, else 1]
    cache_features: bool | None = None  # frozen part computed once (features, or prefix activations) [default: on]
    head: str = "linear"  # cached head-only: linear (logistic regression, L2 by cross-validation) | sgd (epochs)
    compile: bool = False  # torch.compile the network for training
    # optimisation
    epochs: int = 18
    batch_size: int = 256
    optimizer: str = "sgd"  # sgd (momentum, nesterov) | adamw
    lr: float | None = None  # peak learning rate; default 0.1 for sgd, 2e-3 for adamw (at batch 256)
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "onecycle"  # onecycle | cosine (linear warm-up, then cosine)
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    augment: str = "light"  # none | light | shopee | standard
    class_weights: bool = False  # weight the loss by inverse class frequency
    balanced_sampling: bool = False  # sample every class equally often
    # selection and control
    monitor: str = "accuracy"  # validation metric for best checkpoint and early stopping: accuracy | macro_f1 | loss
    patience: int | None = None  # stop after N epochs without improvement
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    amp: bool = True  # mixed precision on CUDA
    workers: int | None = None  # decoding worker processes for file sources
    threads: int | None = None  # CPU threads for torch (default: all cores)
    recipe: str | None = None  # what the auto recipe chose (recipes.py), for the record

    def to_dict(self) -> dict:
        data = asdict(self)
        data["split_ratios"] = list(self.split_ratios)
        return data

    def save(self, path: Path) -> None:
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def read_config_file(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CatalensError(f"config file {path} not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise CatalensError(f"cannot parse {path}: {str(error).splitlines()[0]}") from error
    if not isinstance(data, dict):
        raise CatalensError(f"{path} must hold a mapping of option: value")
    return data


def make_config(config_file: str | Path | None = None, **overrides) -> TrainConfig:
    """Defaults, then the config file, then the overrides that are not None."""
    values = read_config_file(config_file) if config_file else {}
    values.update({key: value for key, value in overrides.items() if value is not None})
    known = {field.name for field in fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise CatalensError(f"unknown config option(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    if "split_ratios" in values:
        values["split_ratios"] = tuple(float(v) for v in values["split_ratios"])
    config = TrainConfig(**values)
    config.freeze = str(config.freeze)
    if config.weights:
        config.pretrained = True
    validate(config)
    return config


def validate(config: TrainConfig) -> None:
    checks = [
        (config.epochs >= 1, "--epochs must be at least 1"),
        (config.batch_size >= 1, "--batch-size must be at least 1"),
        (config.optimizer in ("sgd", "adamw"), "--optimizer must be sgd or adamw"),
        (config.schedule in ("onecycle", "cosine"), "--schedule must be onecycle or cosine"),
        (config.monitor in ("accuracy", "macro_f1", "loss"), "--monitor must be accuracy, macro_f1 or loss"),
        (0 <= config.label_smoothing < 1, "--label-smoothing must be in [0, 1)"),
        (config.limit is None or config.limit > 0, "--limit must be positive"),
        (len(config.split_ratios) == 3, "split_ratios must be three numbers (train, val, test)"),
        (str(config.freeze) in ("none", "backbone") or str(config.freeze).isdigit(),
         "--freeze must be none, backbone or a number of backbone stages to train"),
        (config.resize in ("crop", "squash"), "--resize must be crop or squash"),
        (config.head in ("linear", "sgd"), "--head must be linear or sgd"),
        (config.level in (1, 2, 3), "--level must be 1, 2 or 3"),
        (config.sample is None or config.sample > 0, "--sample must be a positive number of products"),
        (config.unfreeze_every is None or config.unfreeze_every >= 1, "--unfreeze-every must be at least 1"),
        (config.backbone_lr_scale is None or config.backbone_lr_scale >= 0, "--backbone-lr-scale must be >= 0"),
    ]
    for ok, message in checks:
        if not ok:
            raise CatalensError(message)
