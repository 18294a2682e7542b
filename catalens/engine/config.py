"""Training configuration: one dataclass, defaults < YAML config file < explicit arguments.
The resolved config is saved as `config.yaml` in the run directory and can be run again as it is."""

from __future__ import annotations

from dataclasses import asdict, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from catalens.errors import CatalensError
from catalens.options import OPTIONS, make_options_class


def _to_dict(self) -> dict:
    data = asdict(self)
    data["split_ratios"] = list(self.split_ratios)
    return data


def _save(self, path: Path) -> None:
    path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


if TYPE_CHECKING:  # built at run time from the option schema; to a type checker, a class of dynamic fields
    class TrainConfig:
        """Every option of a training run (fields, defaults and help: options.py)."""

        def __init__(self, **options: Any) -> None: ...
        def __getattr__(self, name: str) -> Any: ...
        def __setattr__(self, name: str, value: Any) -> None: ...
        def to_dict(self) -> dict: ...
        def save(self, path: Path) -> None: ...
else:
    TrainConfig = make_options_class(
        "TrainConfig", OPTIONS, "Every option of a training run (fields, defaults and help: options.py).",
        {"to_dict": _to_dict, "save": _save, "__module__": __name__})


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
        (config.resize in (None, "crop", "squash", "pad"), "--resize must be crop, squash or pad"),
        (config.head in ("linear", "sgd"), "--head must be linear or sgd"),
        (config.level in (1, 2, 3), "--level must be 1, 2 or 3"),
        (config.sample is None or config.sample > 0, "--sample must be a positive number of products"),
        (config.unfreeze_every is None or config.unfreeze_every >= 1, "--unfreeze-every must be at least 1"),
        (config.backbone_lr_scale is None or config.backbone_lr_scale >= 0, "--backbone-lr-scale must be >= 0"),
    ]
    for ok, message in checks:
        if not ok:
            raise CatalensError(message)
