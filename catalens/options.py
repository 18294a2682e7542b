"""Every training and data option, declared once: name, type, default, help, and the commands that take it.

TrainConfig (engine/config.py), DataOptions (data/options.py) and the options of `catalens train`, `catalens catalog
stats` and `catalens catalog export` (cli.py) are all built from OPTIONS, like Ultralytics' one default.yaml:
adding an option is one entry here (and the code that uses it).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field, make_dataclass
from typing import Any, Optional

TRAIN, STATS, EXPORT = "train", "catalog stats", "catalog export"
DATA_COMMANDS = (TRAIN, STATS, EXPORT)

DATA_HELP = ("Folder (class-per-subfolder, optionally train/ val/ test/), fashion-mnist[:DIR], bson:FILE, csv:FILE, "
             "sqlite:///FILE or postgresql+psycopg://USER@HOST/DB.")


@dataclass(frozen=True)
class Option:
    name: str
    type: type  # int, float, str, bool, or tuple for config-file-only values
    default: Any
    help: str
    commands: tuple[str, ...] = (TRAIN,)  # the CLI commands that take it; () = config file / Python API only
    flag: str | None = None  # the CLI declaration when not --name-with-dashes (e.g. "--x/--no-x")
    data: bool = False  # part of DataOptions: what to do with a source's items before training or evaluation
    show_default: bool = True  # False where --help would mislead (the auto recipe decides when it is absent)

    @property
    def declaration(self) -> str:
        if self.flag:
            return self.flag
        dashed = "--" + self.name.replace("_", "-")
        return f"{dashed}/--no-{self.name.replace('_', '-')}" if self.type is bool else dashed

    def cli_help(self) -> str:
        shown = self.show_default and self.default is not None and self.default is not False \
            and self.default != "" and "[default" not in self.help
        return self.help + (f" [default: {self.default}]" if shown else "")


def data_option(name, type_, default, help_, commands=DATA_COMMANDS, flag=None) -> Option:
    return Option(name, type_, default, help_, commands, flag, data=True)


OPTIONS: list[Option] = [
    Option("data", str, "fashion-mnist", DATA_HELP, show_default=False),
    Option("model", str, "fastcnn", "Model name: fastcnn (default), fastcnn_dense, cnn3, timm:<name> or "
           "ensemble:<name>+<name>[/mirror] (see catalens models).", show_default=False),
    Option("out", str, "runs/train", "Run directory to write (must be new unless --resume).", show_default=False),
    # what to do with the data (DataOptions)
    data_option("labels", str, None, "Label mapping: a YAML/JSON file (new: [old, ...]) or a built-in name such as "
                "fashion-mnist-groups."),
    Option("limit", int, None, "Train on at most N items, stratified by class."),
    data_option("min_per_class", int, 0, "Drop classes with fewer images (bson: products).", (TRAIN, STATS)),
    data_option("top_classes", int, None, "Keep only the K largest classes.", (TRAIN, STATS)),
    data_option("max_per_class", int, None, "Cap images per class (bson: products, drawn at random).",
                (TRAIN, STATS)),
    data_option("categories", str, None, "bson: category tree CSV (category_id, category_level1..3) [default: "
                "category_names.csv beside the BSON file].", (TRAIN, STATS)),
    data_option("level", int, 3, "bson: the category level to classify at: 1, 2 or 3 (leaf category_id).",
                (TRAIN, STATS)),
    data_option("sample", int, None, "bson: a uniform sample of N products, drawn from the index (seeded by "
                "--seed).", (TRAIN, STATS)),
    data_option("images", str, None, "csv/sql: the image folder (csv default: train_images/ beside the CSV; sql: "
                "root of relative paths)."),
    data_option("dedupe", bool, False, "csv: remove exact duplicates (same file or bytes) and near duplicates "
                "(perceptual hash), one kept per cluster."),
    data_option("max_distance", int, 6, "csv: near duplicates are within this many bits of perceptual hash."),
    data_option("top_groups", int, None, "csv: keep the N largest label groups (applied before --dedupe)."),
    data_option("label_column", str, None, "csv/sql: the column with the labels (csv default: label_group; sql: "
                "needed to train)."),
    data_option("columns", str, None, "csv/sql: other names, key=name,... (csv keys: posting_id, image, "
                "image_phash, title, label_group; sql: Product, Product.Title, Image.Url, ...)."),
    data_option("allow_private_urls", bool, False, "sql: also fetch image URLs at private, loopback or link-local "
                "addresses (a catalog on an intranet) [default: refused, like every address inside the network]."),
    data_option("split_ratios", tuple, (0.8, 0.1, 0.1), "train, val, test shares when the data has no splits.",
                ()),
    data_option("val_fraction", float, None, "Share of train used for validation when the data has no val split "
                "[default: 0.111]; 0 = none.", (TRAIN,)),
    data_option("group_by", str, None, "What splits and cross-validation folds keep together: csv: a column of "
                "the file (e.g. a product or item column); photo: nothing (photo by photo) [default: the product "
                "where the source has products, else groups of near-identical photos].", (TRAIN,)),
    data_option("seed", int, 0, "Random seed: splits, --sample and --max-per-class draws, initialisation.",
                (TRAIN, STATS)),
    # input
    Option("input_size", int, None, "Square input side in pixels [default: the model's, or the data's native "
           "size]."),
    Option("resize", str, None, "crop (shorter side to size, centre crop), squash (the whole photo to a square, "
           "aspect ignored) or pad (the whole photo, aspect kept, padded with its border colour) [default: crop; on a "
           "`catalens zoomed bootstrap` dataset, the geometry it was made for: pad]."),
    # transfer learning
    Option("pretrained", bool, False, "Start a timm backbone from ImageNet weights: --weights FILE, the lite0/1/2 "
           "extras for tf_efficientnet_lite0/1/2, else timm's hub or cache [default: scratch].",
           flag="--pretrained/--from-scratch"),
    Option("weights", str, None, "Pretrained weights file (.pth/.pt state_dict or .safetensors) for the backbone; "
           "implies --pretrained."),
    Option("freeze", str, "none", "none (train everything), backbone (classifier only) or N (the last N backbone "
           "stages and the classifier).", show_default=False),
    Option("unfreeze_every", int, None, "Gradual unfreezing: one more backbone stage trains every N epochs."),
    Option("backbone_lr_scale", float, None, "Backbone learning rate = --lr x this [default: 0.1 when pretrained, "
           "else 1]."),
    Option("cache_features", bool, None, "With --freeze backbone: compute backbone features once and train the "
           "classifier on them; with --freeze N: compute the frozen layers' activations once and train the last N "
           "stages on them (minutes on a CPU) [default: on for none/light augment]."),
    Option("head", str, "linear", "With cached features (--freeze backbone): linear (logistic regression, L2 chosen "
           "by cross-validation) or sgd (--epochs of SGD/AdamW); with --freeze N, linear starts the classifier "
           "from the logistic regression."),
    Option("compile", bool, False, "torch.compile the network."),
    # optimisation
    Option("epochs", int, 18, "Number of epochs [default: 18, about 8 minutes for Fashion-MNIST on 2 CPU cores]."),
    Option("batch_size", int, 256, "Images per step."),
    Option("optimizer", str, "sgd", "sgd (momentum, nesterov) or adamw."),
    Option("lr", float, None, "Peak learning rate [default: 0.1 sgd, 2e-3 adamw, at batch 256]."),
    Option("momentum", float, 0.9, "SGD momentum.", ()),
    Option("weight_decay", float, 5e-4, "L2 weight decay (not on biases and normalisation)."),
    Option("schedule", str, "onecycle", "onecycle or cosine (linear warm-up, then cosine)."),
    Option("warmup_epochs", float, 1.0, "Warm-up of the cosine schedule, in epochs.", ()),
    Option("label_smoothing", float, 0.1, "Label smoothing of the loss."),
    Option("augment", str, "light", "Preset: none, light (horizontal flip), shopee, standard."),
    Option("class_weights", bool, False, "Weight the loss by inverse class frequency."),
    Option("balanced_sampling", bool, False, "Sample every class equally often."),
    # selection and control
    Option("monitor", str, "accuracy", "Validation metric for the best checkpoint and early stopping: accuracy, "
           "macro_f1 (mean F1 over the classes present) or loss."),
    Option("patience", int, None, "Stop after N epochs without improvement."),
    Option("device", str, "auto", "auto, cpu or cuda."),
    Option("amp", bool, True, "Mixed precision on CUDA.", ()),
    Option("workers", int, None, "Decoding processes for image files."),
    Option("threads", int, None, "CPU threads for torch [default: all cores].", ()),
    Option("text", str, None, "Also read the products' text: title, or title,description (csv: and SQL sources). "
           "Fits text-only and fused image+text heads beside the image head, on a frozen pretrained backbone; "
           "predict, evaluate and serve then read the same columns."),
    Option("recipe", str, None, "What the auto recipe chose (recipes.py), for the record.", ()),
]
BY_NAME = {option.name: option for option in OPTIONS}


def dataclass_fields(options: list[Option]) -> list[tuple]:
    annotation = {tuple: "tuple[float, float, float]"}
    return [(option.name, annotation.get(option.type, f"{option.type.__name__} | None"),
             field(default=option.default, metadata={"help": option.help})) for option in options]


def make_options_class(name: str, options: list[Option], doc: str, namespace: dict | None = None) -> type:
    cls = make_dataclass(name, dataclass_fields(options), namespace=dict(namespace or {}, __doc__=doc))
    cls.__module__ = (namespace or {}).get("__module__", __name__)
    return cls


def data_options() -> list[Option]:
    return [option for option in OPTIONS if option.data]


def cli_parameters(command: str, skip: tuple[str, ...] = ()) -> list[inspect.Parameter]:
    """typer options for `command`, all defaulting to None (the config, then OPTIONS, supply the defaults)."""
    import typer

    return [inspect.Parameter(option.name, inspect.Parameter.KEYWORD_ONLY,
                              default=typer.Option(None, option.declaration, help=option.cli_help()),
                              annotation=Optional[option.type])
            for option in OPTIONS if command in option.commands and option.name not in skip]


def with_options(command: str, skip: tuple[str, ...] = ()) -> Callable:
    """Decorator: the command also takes every option of OPTIONS that lists `command`, passed as **options
    (None when not given)."""

    def decorate(function: Callable) -> Callable:
        signature = inspect.signature(function, eval_str=True)
        own = [parameter for parameter in signature.parameters.values()
               if parameter.kind is not inspect.Parameter.VAR_KEYWORD]
        own = [parameter.replace(kind=inspect.Parameter.KEYWORD_ONLY) if parameter.kind is
               inspect.Parameter.POSITIONAL_OR_KEYWORD else parameter for parameter in own]
        function.__signature__ = signature.replace(parameters=own + cli_parameters(command, skip))
        return function

    return decorate
