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
from catalens.data.targets import (
    COLUMN_PREFIX,
    TAG_SEPARATOR,
    TAGS_COLUMN,
    check_tree,
    column,
    detect_tree,
    parse_names,
    present,
    tag_matrix,
)
from catalens.errors import CatalensError
from catalens.metrics import macro_f1, micro_f1
from catalens.models.calibration import fit_temperature
from catalens.models.linear_head import choose_sigmoid_C, fit_linear_head, lbfgs_sigmoid
from catalens.models.targets import ACCURACY_WANTED, Head, TagHead, Targets
from catalens.progress import info, warn
from catalens.rundir.layout import TARGETS_FILE, TARGETS_WEIGHTS_FILE

MIN_TAG_ROWS = 5  # a tag in fewer training rows is dropped (and listed)


def target_names(catalog: Catalog) -> list[str]:
    """The targets a catalog carries (its `target:NAME` columns), in the order given; [] for one label."""
    return [name[len(COLUMN_PREFIX):] for name in catalog.table.columns if name.startswith(COLUMN_PREFIX)]


def has_targets(catalog: Catalog) -> bool:
    """--targets or --tags: heads beside the run's own."""
    return bool(target_names(catalog)) or TAGS_COLUMN in catalog.table.columns


def check_targets(config, train_catalog: Catalog, linear: bool, fine_tuned: bool = False) -> None:
    """Before any image is read: --targets needs the linear head on cached features or a fine-tuned timm network
    (engine/joint.py; --tags only the first), and --tree must hold."""
    names = target_names(train_catalog)
    if config.targets and not names:
        raise CatalensError(f"--targets is read from a csv file's or a SQL Product table's columns, a folder's "
                            f"class levels or a BSON dump's category levels; {config.data} has none: train on one "
                            "label, or export the data to csv")
    if config.tags and TAGS_COLUMN not in train_catalog.table.columns:
        raise CatalensError(f"--tags is read from a csv file's columns; {config.data} has none: export the data to "
                            "csv with a tag column")
    if config.tree and not names:
        raise CatalensError("--tree names levels among --targets: give --targets too")
    if not has_targets(train_catalog):
        return
    if config.text:
        raise CatalensError("--targets or --tags and --text together are not supported yet: train one run with "
                            "each")
    if not linear and not (fine_tuned and config.model.startswith("timm:") and not config.tags):
        raise CatalensError("--targets fits its heads on cached backbone features, or trains them jointly with a "
                            "timm network fine-tuned (--freeze none, --freeze N, or --no-cache-features); --tags "
                            "only on cached features: give --pretrained with --freeze backbone and the linear head "
                            "(no heavy --augment), or no model flags at all")
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
        if levels and names[0] in levels[:-1]:
            warn(f"the first target, {names[0]}, is an upper level of the tree {' > '.join(levels)}: its column in "
                 f"predict's output is the sum of its children's, its `label` column its own head's; put "
                 f"{levels[-1]} first to have both agree")
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
    heads = {}
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
        heads[name] = Head(classes, np.asarray(weight, np.float32), np.asarray(bias, np.float32), 1.0,
                           {**fitted_info, **counted(name, given)})
    tags = fit_tags(config, train_batches, val_batches, train_catalog, val_catalog) \
        if TAGS_COLUMN in train_catalog.table.columns else None
    return store_targets(heads, tree, parents, tags, val_features, val_values, card, out)


def counted(name: str, given: np.ndarray) -> dict:
    """A target's training rows with a value, and those without (said in one warning)."""
    missing = int((~given).sum())
    if missing:
        warn(f"--targets {name}: {missing:,} training image(s) have no value; they train the other targets only")
    return {"train_items": int(given.sum()), "missing": missing}


def store_targets(heads: dict[str, Head], tree: list[str], parents: dict, tags: TagHead | None,
                  val_features: np.ndarray | None, val_values: dict, card, out: Path) -> Targets:
    """Each head's temperature and validation metrics, then targets.json / targets.safetensors and the card's
    `targets`."""
    names = list(heads)
    summary = {}
    for name, head_entry in heads.items():
        if val_features is not None:
            validate(head_entry, val_features, val_values[name])
        summary[name] = {key: head_entry.info.get(key) for key in ("train_items", "missing", "validation", "C")}
    targets = Targets(heads, tree, parents, tags)
    targets.save(out / TARGETS_FILE, out / TARGETS_WEIGHTS_FILE)
    card.targets = {"names": names, "tree": tree, "heads": summary,
                    **({"tags": {"names": tags.names, **tags.info}} if tags is not None else {})}
    if tree and val_features is not None and len(val_features):
        card.targets["tree_thresholds"] = tree_thresholds(targets, val_features, val_values)
    info("targets: " + " | ".join(f"{name} val acc {entry['validation']['accuracy']:.4f}"
                                  for name, entry in summary.items() if entry.get("validation")))
    return targets


def tree_thresholds(targets: Targets, val_features: np.ndarray, val_values: dict) -> dict:
    """For 98 % and 99 % of the answers right: the lowest --min-confidence that gets there on the validation
    split (Targets.threshold_for), with the share it answers; evaluate scores it on the split it reads."""
    found = targets.probabilities(val_features)
    truths = {level: val_values[level] for level in targets.tree}
    chosen = {str(wanted): targets.threshold_for(found, truths, wanted) for wanted in ACCURACY_WANTED}
    info("tree: " + "; ".join(f"{float(wanted):.0%} right from --min-confidence {entry['threshold']:g} on validation "
                              f"({entry['coverage']:.1%} answered)" if entry else
                              f"{float(wanted):.0%} right at no --min-confidence on validation"
                              for wanted, entry in chosen.items()))
    return chosen


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


def fit_tags(config, train_batches, val_batches, train_catalog: Catalog, val_catalog: Catalog | None) -> TagHead:
    """--tags: a sigmoid per tag on the same features (every view a sample; L2 chosen by cross-validation on the
    training split, choose_sigmoid_C), and the tags' thresholds chosen on the validation split (choose_thresholds)."""
    from collections import Counter

    values = train_catalog.table[TAGS_COLUMN].to_numpy(object)[train_batches.rows.numpy()]
    counts = Counter(tag for value in values for tag in str(value).split(TAG_SEPARATOR) if tag)
    names = sorted(tag for tag, count in counts.items() if count >= MIN_TAG_ROWS)
    rare = sorted(tag for tag, count in counts.items() if count < MIN_TAG_ROWS)
    if rare:
        warn(f"--tags: {len(rare)} tag(s) in fewer than {MIN_TAG_ROWS} training rows dropped: "
             + ", ".join(rare[:20]) + (" ..." if len(rare) > 20 else ""))
    if not names:
        raise CatalensError(f"--tags: no tag is in {MIN_TAG_ROWS} or more training rows; give more data or other tags")
    views = train_batches.features.double()
    mean = views.reshape(-1, views.shape[-1]).mean(0)
    y = torch.from_numpy(tag_matrix(values, names)).double()
    groups = getattr(train_batches, "groups", None)
    C, cv_micro_f1 = choose_sigmoid_C(views, y, config.seed, groups=None if groups is None else np.asarray(groups))
    weight, bias = lbfgs_sigmoid((views - mean).reshape(-1, views.shape[-1]), y.repeat(views.shape[0], 1), C)
    bias = bias - weight @ mean
    head = TagHead(names, weight.float().numpy(), bias.float().numpy(), np.full(len(names), 0.5, np.float32),
                   {"C": C, "cv_micro_f1": {str(c): round(f, 4) for c, f in cv_micro_f1.items()},
                    "train_rows": {tag: counts[tag] for tag in names}, "dropped": rare})
    if val_batches is not None and len(val_batches.labels):
        truth = tag_matrix(val_catalog.table[TAGS_COLUMN].to_numpy(object)[val_batches.rows.numpy()], names)
        scores = head.probabilities(val_batches.features[0].float().numpy())
        head.thresholds, head.info["thresholds"] = choose_thresholds(scores, truth, config.seed)
        given = head.given(scores)
        head.info["validation"] = {"micro_f1": micro_f1(given, truth), "items": len(truth)}
    return head


THRESHOLD_RULES = {
    "each tag's F1": lambda scores, truth: np.array([best_threshold(scores[:, i], truth[:, i])
                                                     for i in range(scores.shape[1])], np.float32),
    "0.5": lambda scores, truth: np.full(scores.shape[1], 0.5, np.float32),
}


def choose_thresholds(scores: np.ndarray, truth: np.ndarray, seed: int = 0) -> tuple[np.ndarray, dict]:
    """Each tag's threshold on the validation rows, by the rule whose thresholds score the best micro-F1 out of
    sample: the rows split in two halves, each rule chosen on one half and scored on the other (ties: 0.5).
    The rules: per tag, the threshold that maximises that tag's F1; or 0.5 for every tag (the sigmoid's own
    probability). Per-tag thresholds fit a rare tag's few validation rows: on fashion-products (gender, usage
    and season as 14 tags, 974 validation photos) they scored a micro-F1 of 0.797 out of sample, 0.5 scored 0.826."""
    order = np.random.default_rng(seed).permutation(len(truth))
    halves = [order[: len(order) // 2], order[len(order) // 2:]]
    out_of_sample = {}
    for name, rule in THRESHOLD_RULES.items():
        parts = [micro_f1(scores[held] >= rule(scores[chosen_on], truth[chosen_on]), truth[held])
                 for chosen_on, held in (halves, halves[::-1]) if len(chosen_on) and len(held)]
        out_of_sample[name] = float(np.mean(parts)) if parts else 0.0
    best = max(out_of_sample.values())
    chosen = "0.5" if out_of_sample["0.5"] >= best - 1e-12 else max(out_of_sample, key=out_of_sample.get)
    return THRESHOLD_RULES[chosen](scores, truth), {"rule": chosen, "micro_f1_out_of_sample": {
        name: round(value, 4) for name, value in out_of_sample.items()}}


def best_threshold(scores: np.ndarray, truth: np.ndarray) -> float:
    """The probability from which a tag is given that maximises its F1 on these rows (0.5 when none has it)."""
    if truth.sum() == 0:
        return 0.5
    best, chosen = -1.0, 0.5
    for threshold in np.unique(np.concatenate([scores[truth > 0], np.linspace(0.05, 0.95, 19)])):
        given = scores >= threshold
        f1 = 2 * float((given & (truth > 0)).sum()) / max(1, int(given.sum() + truth.sum()))
        if f1 > best + 1e-12:
            best, chosen = f1, float(threshold)
    return chosen
