"""`catalens train --targets`: a linear head per target on the cached backbone features the run's own head was
fitted on (one backbone pass per photo), each calibrated by its own temperature on the validation split, and the
category tree the targets form (declared with --tree, or found in the training rows). Writes targets.json and
targets.safetensors (models/targets.py) and the card's `targets`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from catalens.data.catalog import Catalog
from catalens.data.targets import COLUMN_PREFIX, check_tree, column, detect_tree, parse_names, present
from catalens.engine.metrics import macro_f1
from catalens.errors import CatalensError
from catalens.models.calibration import fit_temperature
from catalens.models.linear_head import fit_linear_head
from catalens.models.targets import Head, Targets
from catalens.progress import info, warn
from catalens.rundir.layout import TARGETS_FILE, TARGETS_WEIGHTS_FILE


def target_names(catalog: Catalog) -> list[str]:
    """The targets a catalog carries (its `target:NAME` columns), in the order given; [] for one label."""
    return [name[len(COLUMN_PREFIX):] for name in catalog.table.columns if name.startswith(COLUMN_PREFIX)]


def check_targets(config, train_catalog: Catalog, linear: bool) -> None:
    """Before any image is read: --targets needs the linear head on cached features, and --tree must hold."""
    names = target_names(train_catalog)
    if config.tree and not names:
        raise CatalensError("--tree names levels among --targets: give --targets too")
    if not names:
        return
    if config.text:
        raise CatalensError("--targets and --text together are not supported yet: train one run with each")
    if not linear:
        raise CatalensError("--targets fits its heads on cached backbone features: give --pretrained with --freeze "
                            "backbone and the linear head (no heavy --augment), or no model flags at all")
    if config.tree:
        tree_of(config, names, {name: train_catalog.table["label" if i == 0 else column(name)].to_numpy(object)
                                for i, name in enumerate(names)})


def tree_of(config, names: list[str], values: dict[str, np.ndarray]) -> tuple[list[str], dict]:
    """(levels top first, level -> value -> parent value): --tree checked, else the tree the values form."""
    if config.tree:
        levels = parse_names(config.tree, "--tree")
        unknown = [level for level in levels if level not in names]
        if unknown or len(levels) < 2:
            raise CatalensError(f"--tree {config.tree}: give two or more of the --targets ({', '.join(names)}), top "
                                "level first")
    else:
        levels = detect_tree(names, values)
        if levels:
            info(f"the targets form a category tree: {' > '.join(levels)}; upper levels are predicted as the sums "
                 "of their children")
    return levels, check_tree(levels, values) if levels else {}


def fit_target_heads(config, head: nn.Linear, train_batches, val_batches, train_catalog: Catalog,
                     val_catalog: Catalog | None, card, out: Path) -> Targets:
    """One head per target beside the run's own (the first target), each on the training rows that have its value."""
    names = target_names(train_catalog)
    rows = train_batches.rows.numpy()
    values = {name: train_catalog.table["label" if i == 0 else column(name)].to_numpy(object)
              for i, name in enumerate(names)}  # the first target is the label (after any --labels mapping)
    tree, parents = tree_of(config, names, values)
    groups = getattr(train_batches, "groups", None)
    val_features = val_batches.features[0].float().numpy() if val_batches is not None and len(val_batches.labels) \
        else None
    val_values = {name: val_catalog.table["label" if i == 0 else column(name)].to_numpy(object)[
        val_batches.rows.numpy()] for i, name in enumerate(names)} if val_features is not None else {}
    heads, summary = {}, {}
    for index, name in enumerate(names):
        target = values[name][rows]
        given = present(target)
        if index == 0:  # the run's own label, fitted by the linear-head mode
            classes = list(train_catalog.classes)
            weight, bias = head.weight.detach().cpu().numpy(), head.bias.detach().cpu().numpy()
            fitted_info = {}
        else:
            classes = sorted(set(map(str, target[given])))
            if len(classes) < 2:
                raise CatalensError(f"--targets {name}: the training rows hold {len(classes)} value(s) of it; a "
                                    "target needs two or more")
            lookup = {value: i for i, value in enumerate(classes)}
            labels = torch.tensor([lookup[str(value)] for value in target[given]])
            fitted = fit_linear_head(train_batches.features[:, torch.from_numpy(np.flatnonzero(given))], labels,
                                     len(classes), seed=config.seed, balanced=config.class_weights,
                                     groups=None if groups is None else np.asarray(groups)[given])
            weight, bias = fitted.weight.numpy(), fitted.bias.numpy()
            fitted_info = fitted.describe()
        missing = int((~given).sum())
        if missing:
            warn(f"--targets {name}: {missing:,} training image(s) have no value; they train the other targets only")
        head_entry = Head(classes, np.asarray(weight, np.float32), np.asarray(bias, np.float32), 1.0,
                          {**fitted_info, "train_items": int(given.sum()), "missing": missing})
        if val_features is not None:
            validate(head_entry, val_features, val_values[name])
        heads[name] = head_entry
        summary[name] = {key: head_entry.info.get(key) for key in ("train_items", "missing", "validation", "C")}
    targets = Targets(heads, tree, parents)
    targets.save(out / TARGETS_FILE, out / TARGETS_WEIGHTS_FILE)
    card.targets = {"names": names, "tree": tree, "heads": summary}
    info("targets: " + " | ".join(f"{name} val acc {entry['validation']['accuracy']:.4f}"
                                  for name, entry in summary.items() if entry.get("validation")))
    return targets


def validate(head: Head, features: np.ndarray, values: np.ndarray) -> None:
    """The head's temperature (NLL on the validation rows whose value it knows) and its validation metrics."""
    lookup = {value: i for i, value in enumerate(head.classes)}
    known = np.array([present([value])[0] and str(value) in lookup for value in values], bool)
    if known.sum() < 2:
        return
    labels = np.array([lookup[str(value)] for value in values[known]])
    logits = features[known] @ head.weight.T + head.bias
    head.temperature = round(fit_temperature(logits, labels), 6)
    predicted = logits.argmax(1)
    head.info["validation"] = {"accuracy": float((predicted == labels).mean()),
                               "macro_f1": macro_f1(labels, predicted, len(head.classes)), "items": int(known.sum())}
