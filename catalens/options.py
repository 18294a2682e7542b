"""Every training and data option, declared once: name, type, default, help, and the commands that take it.

TrainConfig (engine/config.py), DataOptions (data/options.py) and the options of `catalens train`, `catalens catalog
stats` and `catalens catalog export` (cli.py) are all built from OPTIONS, like Ultralytics' one default.yaml:
adding an option is one entry here (and the code that uses it).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field, make_dataclass, replace
from pathlib import Path
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
    config: bool = True  # a TrainConfig field (False: a command's own option, COMMAND_OPTIONS)
    per_command: dict = field(default_factory=dict, hash=False, compare=False)  # command -> what differs there
    # (default, help, required, argument, kind, flag, short, envvar, metavar, show_default)
    deprecated: dict = field(default_factory=dict, hash=False, compare=False)  # command -> old flag, kept one
    # release as a hidden alias that warns

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

    def on(self, command: str) -> Option:
        """This option as `command` declares it (its per-command differences applied)."""
        differences = {key: value for key, value in self.per_command.get(command, {}).items()
                       if key in ("default", "help", "flag", "show_default")}
        return replace(self, **differences) if differences else self

    def spelled(self, command: str) -> str:
        """The flag `command` spells this option with (--x of --x/--no-x)."""
        return self.on(command).declaration.split("/")[0]

    def setting(self, command: str, key: str, fallback=None):
        return self.per_command.get(command, {}).get(key, fallback)


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
    data_option("targets", str, None, "Several targets from one photo, e.g. articleType,baseColour,gender: csv "
                "columns, a SQL Product table's columns, a folder's class levels (level1,level2,... for "
                "train/Fruit/Apple/Golden/1.jpg) or a BSON dump's category levels (level3,level2,level1: leaf "
                "category_id first); a linear head each on the same frozen backbone features, or trained jointly "
                "with a network fine-tuned whole; the first is the run's own label. A row missing "
                "one target's value trains the other heads.", (TRAIN, STATS)),
    data_option("level_names", str, None, "folder: names of the class-folder levels, top first (e.g. "
                "aisle,product,variety), for --targets [default: level1, level2, ...].", (TRAIN, STATS)),
    data_option("tags", str, None, "csv: tags, several per photo: a column of |-separated tags (--tags style_tags) "
                "or several 0/1 columns (--tags striped,long_sleeve); a sigmoid head with a threshold per tag "
                "chosen on validation (F1). Tags in under 5 training rows are dropped and listed.", (TRAIN, STATS)),
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
    Option("tree", str, None, "With --targets: the targets that form a category tree, top level first (e.g. "
           "masterCategory,subCategory,articleType); each value must have one parent [default: found in the data "
           "when some targets form one]."),
    Option("recipe", str, None, "What the auto recipe chose (recipes.py), for the record.", ()),
]
BY_NAME = {option.name: option for option in OPTIONS}

# The other commands. A command that also takes one of the options above says so here, with what differs for it
# (the default it starts from, a positional argument, a help text naming its own output).
SHARD, AUDIT, MATCH, EVALUATE, EXPORT_MODEL, PREDICT, SORT, SERVE = (
    "shard", "audit", "match", "evaluate", "export", "predict", "sort", "serve")
ZOOMED, BSON_GENERATE, BSON_INDEX, DEMO = "zoomed bootstrap", "bson generate", "bson index", "demo"
RUN_HELP = "Run directory written by `catalens train`, or an exported .onnx file."
TEXT_HELP = ("The text columns a model trained with --text reads (title, or title,description) [default: those "
             "it was trained on].")
DATA_ARGUMENT = {"argument": True, "required": True}
TRAINING_DEFAULT = " [default: the one used in training]."
ALSO: dict[str, dict[str, dict]] = {
    "data": {SHARD: DATA_ARGUMENT, AUDIT: DATA_ARGUMENT, STATS: DATA_ARGUMENT, EXPORT: DATA_ARGUMENT,
             EVALUATE: {"required": True},
             EXPORT_MODEL: {"help": "With --int8: the training data, when the card's path no longer reaches it."},
             DEMO: {"default": "fashion-mnist", "help": "fashion-mnist or fashion-mnist:DIR."}},
    "out": {SHARD: {"required": True, "kind": "path", "help": "A new folder for the shards, index.csv and "
                    "shards.json."},
            AUDIT: {"required": True, "kind": "path", "help": "Folder for issues.csv, report.html, report.md, "
                    "label_suspects.png."},
            MATCH: {"required": True, "kind": "path", "help": "matches.csv (posting_id,matches); with fit: "
                    "matcher.json; with index: the index folder."},
            EVALUATE: {"kind": "path", "help": "Report directory [default: MODEL/eval]."},
            EXPORT_MODEL: {"kind": "path", "help": "The file to write, e.g. model.onnx (with --int8: optional; the "
                           "int8 network is kept in the run directory either way)."},
            PREDICT: {"kind": "path", "help": "Output file [default: standard output]."},
            EXPORT: {"required": True, "kind": "path", "help": "The CSV file to write."},
            ZOOMED: {"required": True, "kind": "path", "help": "The dataset folder to write (train/ and val/, each "
                     "with zoomed/ and normal/)."},
            BSON_GENERATE: {"argument": True, "required": True, "kind": "path", "help": "The .bson file to write."},
            DEMO: {"default": "runs/demo", "kind": "path", "help": "Run directory."}},
    "labels": {EVALUATE: {"help": BY_NAME["labels"].help + TRAINING_DEFAULT}},
    "categories": {SHARD: {}, AUDIT: {}, EVALUATE: {"help": BY_NAME["categories"].help + TRAINING_DEFAULT},
                   PREDICT: {},
                   BSON_GENERATE: {"required": True, "kind": "path", "help": "The category tree, e.g. "
                                   "category_names.csv."}},
    "sample": {SHARD: {}, AUDIT: {}, EVALUATE: {"help": BY_NAME["sample"].help + TRAINING_DEFAULT}, PREDICT: {}},
    "images": {PREDICT: {}, MATCH: {"kind": "path", "help": "The folder of the postings' image files: the image "
                                    "signal (a frozen pretrained backbone's features) for matchers fitted with it; "
                                    "with index, the csv: catalog's images [default: train_images/ beside the "
                                    "CSV]."}},
    "columns": {PREDICT: {}, MATCH: {}},
    "allow_private_urls": {SERVE: {"help": "Also fetch URLs inside the network (an intranet's image server); off "
                                   "by default: a client could otherwise read internal hosts through this "
                                   "server."}},
    "seed": {ZOOMED: {"default": 0, "help": "Random seed of the crops and of the train/val split of the photos."},
             BSON_GENERATE: {"default": 0, "help": "Random seed of the categories and photos drawn."}},
    "epochs": {DEMO: {"default": 4, "help": "Training epochs (about half a minute each on 2 CPU cores)."}},
    "batch_size": {EVALUATE: {"default": 256, "help": "Images per model call."}, PREDICT: {"default": 256},
                   SORT: {"default": 64}, AUDIT: {"default": 64}},
    "workers": {EVALUATE: {}, PREDICT: {}, AUDIT: {},
                SORT: {"help": "Decoding processes for image files [default: cores, at most 4]."}},
    "text": {EVALUATE: {"help": TEXT_HELP}, PREDICT: {"help": TEXT_HELP},
             SERVE: {"help": "Check that the model reads this text (title, or title,description): requests then "
                     "send it as a `title` field."}},
}


def command_option(name: str, type_: type, default, help_: str, commands: tuple[str, ...], **per: Any) -> Option:
    """An option of commands other than train's config. `per` holds what applies to every command that takes it
    (argument, required, kind, short, envvar, metavar, flag) and, under a command's name, what differs there."""
    common = {key: value for key, value in per.items() if key not in commands and key not in ("flag", "deprecated")}
    differences = {command: {**common, **per.get(command, {})} for command in commands}
    return Option(name, type_, default, help_, commands, per.get("flag"), config=False, per_command=differences,
                  deprecated=per.get("deprecated", {}))


RUN_ARGUMENT = {"argument": True, "required": True, "kind": "path", "metavar": "MODEL"}
COMMAND_OPTIONS: list[Option] = [
    # the trained model a command uses
    command_option("run", str, None, RUN_HELP, (EVALUATE, EXPORT_MODEL, PREDICT, SORT, SERVE, AUDIT, MATCH),
                   **{EVALUATE: RUN_ARGUMENT, PREDICT: RUN_ARGUMENT, SORT: RUN_ARGUMENT, SERVE: RUN_ARGUMENT,
                      EXPORT_MODEL: {**RUN_ARGUMENT, "help": "Run directory written by `catalens train`."},
                      AUDIT: {"kind": "path", "help": "A run directory: its network makes the features [default: "
                              "--backbone]."},
                      MATCH: {"kind": "path", "help": "With index: the run directory whose backbone embeds the "
                              "images (the model `serve` will run)."}},
                   deprecated={AUDIT: "--model", MATCH: "--model"}),
    command_option("inputs", str, None, "Image files, folders (searched recursively) or one data spec.", (PREDICT,),
                   argument=True, required=True, kind="list"),
    command_option("input_dir", str, None, "Folder of images, searched recursively.", (SORT,), argument=True,
                   required=True, kind="path"),
    command_option("output_dir", str, None, "Where the class folders go (not inside INPUT_DIR).", (SORT,),
                   argument=True, required=True, kind="path"),
    command_option("args", str, None, "A marketplace CSV (posting_id, image, image_phash, title[, label_group]); "
                   "`fit DATA` fits a matcher on labelled postings; `index DATA --run RUN` indexes a catalog for "
                   "serve's /v1/match.", (MATCH,), argument=True, required=True, kind="list",
                   metavar="[fit|index] DATA"),
    command_option("file", str, None, "The .bson file.", (BSON_INDEX,), argument=True, required=True, kind="path"),
    # train
    command_option("config_file", str, None, "YAML config (e.g. a run's config.yaml); options given here override "
                   "it.", (TRAIN,), kind="path", flag="--config"),
    command_option("resume", bool, False, "Continue the interrupted run in --out.", (TRAIN,), flag="--resume"),
    command_option("time_budget", float, 15.0, "Minutes the auto recipe may take (used when no --model, "
                   "--pretrained, --weights, --freeze or --epochs is given).", (TRAIN,)),
    command_option("min_speed", float, 56.0, "Auto recipe: the slowest model it may choose, in photos/s on this "
                   "machine (decoding included; 56 sorts 100,000 photos in 30 min). The most accurate candidate at "
                   "least this fast is chosen; 0: the most accurate, however slow.", (TRAIN,)),
    command_option("nproc", int, 1, "Data-parallel training on N processes (PyTorch DDP through torchrun: one per "
                   "GPU, or gloo on CPU cores). --batch-size stays the global batch.", (TRAIN,)),
    # predictions: how and what
    command_option("backend", str, "auto", "torch, onnx (onnxruntime) or auto (onnx on CPU).",
                   (EVALUATE, PREDICT, SORT, SERVE)),
    command_option("split", str, None, "Only this split of the data: test, val, train or all.", (EVALUATE, PREDICT),
                   **{EVALUATE: {"help": "test, val, train or all [default: test if the data has one, else all]."},
                      PREDICT: {"help": "With a data spec: only this split."}}),
    command_option("top_k", int, 5, "How many classes to list per image.", (PREDICT, SORT), short="-k",
                   **{SORT: {"default": 3, "help": "Classes listed per image in the manifest."}}),
    command_option("output_format", str, "csv", "csv, jsonl or parquet (needs --out).", (PREDICT, EXPORT_MODEL),
                   flag="--format", **{EXPORT_MODEL: {"default": "onnx", "help": "onnx (the only format so far)."}}),
    command_option("threshold", float, None, "A top (calibrated) probability under P marks the image uncertain "
                   "(predict: an `uncertain` column; sort: the uncertain/ folder).", (PREDICT, SORT)),
    command_option("min_confidence", float, None, "Answer at the deepest level of a --targets run's category "
                   "tree (or with the label) whose calibrated probability is at least P, e.g. 0.9 (predict: the "
                   "`answer` and `answered_level` columns; sort: nested folders such as Apparel/Topwear/, "
                   "uncertain/ when not even the top level is sure). evaluate's report.md names the P that got 98 % "
                   "and 99 % of the answers right on validation.", (PREDICT, SORT)),
    command_option("target_accuracy", float, None, "Choose --threshold from the run's validation curve: the one "
                   "that answered the most validation photos at this accuracy (e.g. 0.98).", (PREDICT, SORT)),
    command_option("submission", str, None, "With bson:FILE: write the CDiscount submission (_id,category_id, one "
                   "row per product); an interrupted run continues where it stopped.", (PREDICT,), kind="path"),
    command_option("engine", str, "local", "local (this process and its decoding workers) or ray (Ray Data: "
                   "decoding tasks and a pool of model actors; pip install 'catalens[ray]').", (PREDICT,)),
    command_option("ray_address", str, None, "With --engine ray: auto (a running cluster), HOST:PORT or "
                   "ray://HOST:PORT [default: start a local Ray].", (PREDICT,)),
    command_option("actors", int, None, "With --engine ray: model actors [default: half the cluster's CPUs].",
                   (PREDICT,)),
    command_option("gpus_per_actor", float, 0.0, "With --engine ray: GPUs per model actor (e.g. 0.5: two actors "
                   "share a GPU; the model then runs in PyTorch).", (PREDICT,)),
    command_option("leakage_check", bool, True, "Count evaluation images that are byte-identical or near "
                   "duplicates of training images, warn, and show them in report.md.", (EVALUATE,)),
    # files placed: sort and audit --apply
    command_option("mode", str, "copy", "How files are placed: copy, move, hardlink or symlink.", (SORT, AUDIT),
                   **{AUDIT: {"help": "With --apply: copy or move."}}),
    command_option("dry_run", bool, False, "Print the plan (source -> destination); touch nothing.", (SORT,),
                   flag="--dry-run"),
    # export
    command_option("int8", bool, False, "Quantize to int8 (calibrated on 200 training photos), check it on the "
                   "validation split and keep it when it is within --tolerance of float32: predict, sort, evaluate "
                   "and serve then use it (about 2x faster on CPU).", (EXPORT_MODEL,), flag="--int8"),
    command_option("tolerance", float, 0.005, "With --int8: the validation accuracy int8 may lose against float32 "
                   "(0.005 = half a point).", (EXPORT_MODEL,)),
    # audit
    command_option("backbone", str, "tf_efficientnet_lite0", "A pretrained timm backbone for the features "
                   "(packaged weights: tf_efficientnet_lite0/1/2).", (AUDIT,)),
    command_option("folds", int, 5, "Folds of the out-of-fold linear heads.", (AUDIT,)),
    command_option("apply_to", str, None, "Copy (or --mode move) the suspects into DIR/KIND/LABEL/, with a journal: "
                   "a killed run is finished by running it again. Uses OUT/issues.csv when it is there.", (AUDIT,),
                   kind="path", flag="--apply"),
    command_option("kinds", str, "broken,label,leak,duplicate,outlier", "With --apply: which kinds.", (AUDIT,)),
    command_option("write_catalog_to", str, None, "Write the catalog as CSV without the items listed in --remove.",
                   (AUDIT,), kind="path", flag="--write-catalog"),
    command_option("remove", str, None, "With --write-catalog: a CSV with an `item` column (e.g. issues.csv, "
                   "keeping only the rows you agree with).", (AUDIT,), kind="path"),
    # match
    command_option("add", bool, False, "With index: add DATA's new items to the existing index at --out (nothing "
                   "already there is recomputed).", (MATCH,), flag="--add"),
    command_option("matcher", str, None, "A matcher written by `catalens match fit` [default: catalens's, fitted on "
                   "real Shopee postings].", (MATCH,), kind="path"),
    command_option("explain", str, None, "Also write every candidate pair with each signal's similarity and the "
                   "combined probability.", (MATCH,), kind="path"),
    # serve
    command_option("host", str, "127.0.0.1", "Address to listen on (0.0.0.0: every interface).", (SERVE,)),
    command_option("port", int, 8000, "Port to listen on.", (SERVE,)),
    command_option("db", str, "sqlite:///catalens-history.db", "Where the prediction history lives: "
                   "sqlite:///FILE or postgresql+psycopg://USER@HOST/DB.", (SERVE,)),
    command_option("max_batch", int, 16, "Micro-batching: images per model call at most; 1 turns batching off.",
                   (SERVE,)),
    command_option("max_wait_ms", float, 0.0, "Micro-batching: how long the first request of a batch waits for "
                   "others; 0 takes only what queued while the model was busy (best on CPU, BENCHMARKS.md); a few "
                   "ms can pay on a GPU.", (SERVE,)),
    command_option("max_upload_mb", float, 10.0, "Largest request body.", (SERVE,)),
    command_option("max_megapixels", float, 40.0, "Largest image, checked before decoding.", (SERVE,)),
    command_option("max_images", int, 8, "Images per request at most.", ()),
    command_option("api_key", str, None, "Require this X-API-Key header on /v1/* (predict, model, history, "
                   "thumbnails, export; the page asks for it); /healthz, /readyz and /metrics stay open. Required "
                   "with a --host beyond loopback.", (SERVE,), envvar="CATALENS_API_KEY"),
    command_option("cors_origin", str, None, "Allow browser calls from this origin (repeatable), e.g. "
                   "https://shop.example.com.", (SERVE,), kind="list", default_list=True),
    command_option("keep_originals", bool, False, "Store uploaded images in the history, not only thumbnails.",
                   (SERVE,), flag="--keep-originals"),
    command_option("urls", bool, True, "Fetch images by URL when a request gives one (never from loopback, private "
                   "or link-local addresses, redirects included).", (SERVE,)),
    command_option("url_timeout_s", float, 5.0, "Seconds a URL fetch may take.", ()),
    command_option("insecure_no_auth", bool, False, "Serve beyond loopback without an API key (refused by "
                   "default).", (SERVE,), flag="--insecure-no-auth"),
    command_option("access_log", bool, False, "Log every request.", (SERVE,), flag="--access-log"),
    command_option("match_index", str, None, "A product index built with this model (`catalens match index`): POST "
                   "/v1/match answers with the nearest catalog products of a photo and/or a title.", (SERVE,),
                   kind="path"),
    command_option("max_title_chars", int, 2000, "Longest title a request may send.", ()),
    # zoomed bootstrap
    command_option("photos", str, None, "Folder of product photos to build from (class subfolders allowed).",
                   (ZOOMED, BSON_GENERATE), flag="--from", required=True,
                   **{ZOOMED: {"kind": "paths", "help": "Normal product photos (searched recursively; class "
                               "subfolders allowed); repeat it to mix catalog styles."},
                      BSON_GENERATE: {"kind": "path"}}, deprecated={BSON_GENERATE: "--images"}),
    command_option("crops_per_photo", float, 1.0, "Zoomed crops made from each photo; a fraction draws that share of "
                   "one (0.17: about 1 zoomed per 6 normal).", (ZOOMED,)),
    command_option("area", str, "0.02,0.15", "MIN,MAX share of the photo's area a crop covers.", (ZOOMED,)),
    command_option("val_share", float, 0.2, "Share of photos (with their crops) in val/; 1 puts every photo in val/, "
                   "for a held-out test set.", (ZOOMED,), deprecated={ZOOMED: "--val-fraction"}),
    # shard, catalog, bson
    command_option("size", str, None, "A size in bytes, e.g. 1GB or 256MB.", (SHARD, BSON_GENERATE),
                   **{SHARD: {"default": "1GB", "help": "Bytes per tar shard, e.g. 1GB or 256MB."},
                      BSON_GENERATE: {"help": "Stop at this file size, e.g. 2GB or 300MB."}}),
    command_option("as_json", bool, False, "Print JSON (items, products, classes, per_class, problems).", (STATS,),
                   flag="--json"),
    command_option("verify", bool, False, "Decode every image and leave out unreadable ones.", (STATS, EXPORT),
                   **{STATS: {"default": True, "help": "Decode every image to find unreadable ones (--no-verify only "
                              "lists files: much faster on huge folders)."}}),
    command_option("products", int, None, "Stop after N products.", (BSON_GENERATE,)),
    command_option("classes", int, 50, "How many leaf categories of the tree to use.", (BSON_GENERATE,)),
    command_option("test", bool, False, "Write a test file: no category_id.", (BSON_GENERATE,), flag="--test"),
    command_option("quality", int, 75, "JPEG quality of the 180x180 pictures.", (BSON_GENERATE,)),
    command_option("rebuild", bool, False, "Build it again even if the saved index is current.", (BSON_INDEX,),
                   flag="--rebuild"),
]


def extend(options: list[Option], also: dict[str, dict[str, dict]]) -> list[Option]:
    """OPTIONS with the other commands that take each (ALSO)."""
    return [replace(option, commands=option.commands + tuple(also[option.name]),
                    per_command={**option.per_command, **also[option.name]})
            if option.name in also else option for option in options]


SCHEMA: list[Option] = extend(OPTIONS, ALSO) + COMMAND_OPTIONS  # every option of every command, once
SCHEMA_BY_NAME = {option.name: option for option in SCHEMA}


def default_of(name: str, command: str):
    """The default `command` gives option `name` (ServeOptions' defaults come from here)."""
    return SCHEMA_BY_NAME[name].setting(command, "default", SCHEMA_BY_NAME[name].default)


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


KIND_TYPES: dict[str, Any] = {"path": Path, "list": list[str], "paths": list[Path]}  # a value's type on the CLI


def cli_parameter(option: Option, command: str) -> inspect.Parameter:
    """One typer parameter of `command`. Training options default to None (the config, then OPTIONS, supply
    the defaults); a command's own options show their default."""
    import typer

    own = option.on(command)
    setting = option.per_command.get(command, {})
    argument = setting.get("argument", False)
    # an option with an old spelling is checked by with_options once the old spelling is merged in
    required = setting.get("required", False) and command not in option.deprecated
    default = ... if required else (setting.get("default") if option.config else own.default)
    kind = setting.get("kind")
    annotation: Any = KIND_TYPES.get(kind, option.type)
    if not required and default is None:
        annotation = Optional[annotation]
    extra = {key: setting[key] for key in ("metavar", "envvar") if key in setting}
    if argument:
        declared = typer.Argument(default, help=own.help, show_default=default is not None, **extra)
    else:
        flags = [own.declaration] + ([setting["short"]] if "short" in setting else [])
        text = own.cli_help() if option.config and "default" not in setting else own.help
        declared = typer.Option(default, *flags, help=text, **extra)
    return inspect.Parameter(option.name, inspect.Parameter.KEYWORD_ONLY, default=declared, annotation=annotation)


def alias_parameter(option: Option, command: str) -> inspect.Parameter:
    """The old spelling of a renamed option, hidden from --help."""
    import typer

    kind = option.per_command.get(command, {}).get("kind")
    annotation: Any = Optional[KIND_TYPES.get(kind, option.type)]
    return inspect.Parameter(f"{option.name}__deprecated", inspect.Parameter.KEYWORD_ONLY,
                             default=typer.Option(None, option.deprecated[command], hidden=True),
                             annotation=annotation)


def cli_parameters(command: str) -> list[inspect.Parameter]:
    """The typer parameters of `command`, from SCHEMA: its arguments in their order, then its options."""
    chosen = [option for option in SCHEMA if command in option.commands]
    arguments = [option for option in chosen if option.setting(command, "argument")]
    flags = [option for option in chosen if not option.setting(command, "argument")]
    return [cli_parameter(option, command) for option in arguments + flags] + \
        [alias_parameter(option, command) for option in flags if command in option.deprecated]


def with_options(command: str) -> Callable:
    """Decorator: `function(**options)` becomes the typer command `command`, its parameters all from SCHEMA. A
    renamed option's old spelling still works for one release, with a warning."""

    renamed = [option for option in SCHEMA if command in option.deprecated]

    def decorate(function: Callable) -> Callable:
        @functools.wraps(function)
        def command_function(**given):
            for option in renamed:
                old = given.pop(f"{option.name}__deprecated", None)
                if old is not None:
                    from catalens.progress import warn

                    warn(f"{option.deprecated[command]} is deprecated in `catalens {command}`: write "
                         f"{option.spelled(command)} (the old spelling goes in the next release)")
                    given[option.name] = old
                if option.setting(command, "required") and given.get(option.name) is None:
                    import click

                    raise click.UsageError(f"Missing option '{option.spelled(command)}'.")
            return function(**given)

        parameters = cli_parameters(command)
        del command_function.__wrapped__  # typer reads the signature below, not the function's own
        command_function.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        command_function.__annotations__ = {parameter.name: parameter.annotation for parameter in parameters}
        return command_function

    return decorate
