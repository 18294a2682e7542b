"""`catalens train`: a Catalog in, a run directory out (see run.py for its contents)."""

from __future__ import annotations

import csv
import json
import math
import shutil
import time
import warnings
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from catalens import __version__
from catalens.data import DataOptions, load_catalog
from catalens.data.catalog import Catalog
from catalens.data.provenance import REAL, provenance
from catalens.data.splits import stratified_sample
from catalens.engine.config import TrainConfig, make_config
from catalens.engine.distributed import World, all_sum, barrier, broadcast, leave_now, rank_device, world_from_env
from catalens.engine.distributed import start as start_distributed
from catalens.engine.distributed import stop as stop_distributed
from catalens.engine.joint import JointTargets, attach_joint, finish_joint_targets
from catalens.engine.modes import CachedPrefix, FineTune, Inputs, Job, LinearHead, Setup, choose_mode
from catalens.engine.targets import check_targets, fit_target_heads, has_targets, target_names
from catalens.engine.trainer import Callback, EarlyStopping, FreezeSchedule, HistoryWriter, Trainer, TrainState
from catalens.errors import CatalensError
from catalens.files import atomic_path
from catalens.loading.augment import get_preset
from catalens.loading.batches import make_batches
from catalens.loading.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocessing, array_mean_std
from catalens.metrics import macro_f1
from catalens.models import canonical_model_name, create_model, default_input_size
from catalens.models.calibration import uncalibrated
from catalens.models.finetune import FreezePlan, head_and_backbone_parameters
from catalens.models.pretrained import load_pretrained
from catalens.models.timm_models import timm_preprocessing
from catalens.options import data_options as data_option_list
from catalens.plots import plot_history
from catalens.progress import info, warn
from catalens.rundir.card import ModelCard
from catalens.rundir.layout import (
    CARD_FILE,
    CHECKPOINT_FILE,
    CONFIG_FILE,
    CURVES_FILE,
    HISTORY_FILE,
    LAST_WEIGHTS_FILE,
    PROBLEMS_FILE,
    TEXT_FILE,
    TEXT_WEIGHTS_FILE,
    WEIGHTS_FILE,
)
from catalens.rundir.run import (
    count_parameters,
    pick_device,
    save_weights,
    write_json,
)

HISTORY_COLUMNS = ["epoch", "lr", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_macro_f1",
                   "images_per_s", "seconds"]



@dataclass
class TrainResult:
    run_dir: Path
    best_epoch: int
    metrics: dict  # best validation metrics (empty without a validation split)
    seconds: float
    # a linear head's cached (train, validation) FeatureBatches, kept in memory for the auto recipe's distillation
    features: tuple | None = None


def make_preprocessing(config: TrainConfig, catalog: Catalog) -> Preprocessing:
    """The data's own statistics for a network trained from scratch; a pretrained backbone's own
    preprocessing (size, interpolation, crop, mean/std, RGB) when it starts from pretrained weights."""
    if config.pretrained:
        name = pretrained_backbone(config)
        if name.startswith("ensemble:"):
            from catalens.models.ensemble import input_backbone

            name = input_backbone(name)[0]
        size = (config.input_size,) * 2 if config.input_size else default_input_size(config.model, None)
        return Preprocessing.of_backbone(timm_preprocessing(name), size, resize_mode(config))
    native = catalog.native_size
    size = (config.input_size, config.input_size) if config.input_size else default_input_size(config.model, native)
    if catalog.arrays is not None:
        mean, std = array_mean_std(catalog.arrays, catalog.channels)
    elif catalog.channels == 3:
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    else:
        mean, std = (0.5,), (0.5,)
    return Preprocessing(input_size=tuple(size), channels=catalog.channels, mean=mean, std=std,
                         resize=resize_mode(config))


def resize_mode(config: TrainConfig) -> str:
    """--resize, or when not given the geometry a `zoomed bootstrap` dataset was made for, else the centre crop."""
    from catalens.data.provenance import bootstrap_geometry

    resize = config.resize or bootstrap_geometry(config.data) or "crop"
    return {"crop": Preprocessing.resize}.get(resize, resize)


def pretrained_backbone(config: TrainConfig) -> str:
    """The timm name of the backbone `--pretrained` asks weights for (an `ensemble:` name: all its members)."""
    if config.model.startswith("ensemble:"):
        return config.model
    if not config.model.startswith("timm:"):
        raise CatalensError(f"--pretrained needs a timm backbone (e.g. tf_efficientnet_lite0); {config.model} "
                            "has no pretrained weights")
    return config.model.removeprefix("timm:")


def parameter_groups(config: TrainConfig, module: nn.Module, lr: float, extra: nn.Module | None = None) -> list[dict]:
    """The classifier (and `extra`, the other targets' heads) at `lr`, the backbone at lr x backbone_lr_scale; no
    weight decay on biases and normalisation parameters. Frozen parameters are in the groups too (they get no
    gradient, so no update): gradual unfreezing needs them there."""
    scale = config.backbone_lr_scale if config.backbone_lr_scale is not None else (0.1 if config.pretrained else 1.0)
    head, backbone = head_and_backbone_parameters(module, config.model)
    head = list(head) + (list(extra.parameters()) if extra is not None else [])
    groups = []
    for parameters, group_lr in ((head, lr), (backbone, lr * scale)):
        decay = [parameter for parameter in parameters if parameter.ndim > 1]
        no_decay = [parameter for parameter in parameters if parameter.ndim <= 1]
        groups += [{"params": decay, "weight_decay": config.weight_decay, "lr": group_lr},
                   {"params": no_decay, "weight_decay": 0.0, "lr": group_lr}]
    return [group for group in groups if group["params"]]


def make_optimizer(config: TrainConfig, module: nn.Module, extra: nn.Module | None = None):
    """The optimiser over the parameter groups of the network and of `extra` (the other targets' heads)."""
    default_lr = 0.1 if config.optimizer == "sgd" else 2e-3
    lr = config.lr if config.lr is not None else default_lr * config.batch_size / 256
    groups = parameter_groups(config, module, lr, extra)
    if config.optimizer == "sgd":
        optimizer: torch.optim.Optimizer = torch.optim.SGD(groups, lr=lr, momentum=config.momentum,
                                                           nesterov=config.momentum > 0)
    else:
        optimizer = torch.optim.AdamW(groups, lr=lr)
    return optimizer, [group["lr"] for group in groups]


def make_scheduler(config: TrainConfig, optimizer, peak_lr: list[float], steps_per_epoch: int):
    total = config.epochs * steps_per_epoch
    if config.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=peak_lr, total_steps=total, pct_start=min(0.3, max(0.05, 3 / config.epochs / 4)),
        )
    warmup = max(1, int(config.warmup_epochs * steps_per_epoch))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def class_weight_tensor(catalog: Catalog, num_classes: int) -> torch.Tensor:
    counts = np.bincount(catalog.labels, minlength=num_classes).astype(np.float64)
    weights = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / num_classes, 0.0)
    return torch.tensor(weights, dtype=torch.float32)


def evaluate_split(net, batches, to_inputs, device, num_classes) -> dict:
    net.eval()
    losses, predictions, targets = [], [], []
    with torch.inference_mode():
        for batch in batches:
            if not len(batch.labels):
                continue
            logits = net(to_inputs(batch.images.to(device, non_blocking=True))).float()
            labels = batch.labels.to(device)
            losses.append(F.cross_entropy(logits, labels, reduction="sum").item())
            predictions.append(logits.argmax(1).cpu().numpy())
            targets.append(batch.labels.numpy())
    net.train()
    if not targets:
        return {}
    predicted, truth = np.concatenate(predictions), np.concatenate(targets)
    return {
        "loss": sum(losses) / len(truth),
        "accuracy": float((predicted == truth).mean()),
        "macro_f1": macro_f1(truth, predicted, num_classes),
    }


def prepare_run_dir(out: Path, resume: bool) -> None:
    if resume:
        if not (out / CHECKPOINT_FILE).is_file():
            raise CatalensError(f"nothing to resume in {out}: {CHECKPOINT_FILE} not found; start without --resume")
        return
    if out.exists() and any(out.iterdir()):
        raise CatalensError(f"run directory {out} already exists and is not empty; use --resume to continue it, "
                            "or choose another --out")
    out.mkdir(parents=True, exist_ok=True)


def data_options(config: TrainConfig) -> DataOptions:
    return DataOptions(**{option.name: getattr(config, option.name) for option in data_option_list()})


def training_data(config: TrainConfig) -> tuple[Catalog, Catalog, Catalog | None]:
    catalog = load_catalog(config.data, data_options(config))
    train_catalog = catalog.split("train") if catalog.has_split("train") else catalog
    val_catalog = catalog.split("val") if catalog.has_split("val") else None
    if config.limit:
        train_catalog = stratified_sample(train_catalog, config.limit, config.seed)
        if val_catalog is not None:
            val_catalog = stratified_sample(val_catalog, max(config.limit // 4, len(catalog.classes)), config.seed)
    labels = train_catalog.table["label"]
    present = labels[labels != ""].nunique()
    if present < 2:
        hint = "; for a SQL database give --label-column NAME" if not config.label_column and present == 0 else ""
        raise CatalensError(f"training needs at least 2 classes with images; {config.data} has {present} "
                            f"in its train split{hint}")
    return catalog, train_catalog, val_catalog


def train(config: TrainConfig | None = None, resume: bool = False, callbacks: list[Callback] | None = None,
          **overrides) -> TrainResult:
    """Train a classifier and write its run directory. Keyword overrides are TrainConfig fields; `callbacks`
    (trainer.Callback) run after catalens's own in every epoch: loggers, EMA, custom stopping rules. Under torchrun
    (distributed.py) every rank calls this; rank 0 writes the run directory."""
    world = world_from_env()
    try:
        result = train_ranks(config, resume, callbacks, world, **overrides)
    except BaseException:
        stop_distributed()
        raise
    leave_now()  # a rank of `catalens train --nproc N`: done, without the interpreter's teardown
    stop_distributed()
    return result


def train_ranks(config: TrainConfig | None, resume: bool, callbacks: list[Callback] | None, world: World,
                **overrides) -> TrainResult:
    config = resolve_config(config, resume, overrides)
    out = Path(config.out)
    device = rank_device(world, pick_device(config.device))
    start_distributed(world, device)
    if world.main:
        prepare_run_dir(out, resume)
    barrier(world)
    if world.distributed and config.batch_size % world.size:
        raise CatalensError(f"--batch-size {config.batch_size} is the global batch: it must divide by the "
                            f"{world.size} processes")
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)

    catalog, train_catalog, val_catalog = training_data(config)
    texts = training_texts(config, train_catalog, val_catalog)  # a bad --text fails before any image is read
    preprocessing = make_preprocessing(config, catalog)
    module, pretrained = build_network(config, len(catalog.classes), preprocessing, out, resume, device)
    plan = FreezePlan(module, config.model, config.freeze, config.unfreeze_every)
    mode = choose_mode(config, plan, module)
    fine_tuned = isinstance(mode, (FineTune, CachedPrefix))
    check_targets(config, train_catalog, isinstance(mode, LinearHead), fine_tuned)
    joint = JointTargets(module, train_catalog, target_names(train_catalog), out, resume) \
        if has_targets(train_catalog) and fine_tuned else None
    if joint is not None and world.distributed:
        raise CatalensError("--targets with a fine-tuned network trains on one process so far: leave out --nproc "
                            "(or freeze the backbone: its heads are fitted on one process anyway)")
    if world.distributed and mode.single_process:  # cached modes take seconds to minutes: rank 0 runs them alone
        if not world.main:
            return TrainResult(out, 0, {}, 0.0)
        info(f"cached-feature training runs on one process; the other {world.size - 1} have nothing to do")
        world = World()
    trainer, prepared = make_trainer(config, mode, module, plan, preprocessing, device, catalog, train_catalog,
                                     val_catalog, texts, pretrained, world, resume, callbacks, joint)
    setup = prepared.setup
    started = time.time()
    interrupted = False
    try:
        state = trainer.fit(trainer.state.epoch, 0 if setup.fitted is not None else config.epochs)
        best_epoch, best_metrics = state.best_epoch, state.best_metrics
    except KeyboardInterrupt:
        interrupted = True
        best_epoch, best_metrics = trainer.state.best_epoch, trainer.state.best_metrics
        warn(f"interrupted; the last finished epoch is saved. Continue with: catalens train --out {out} --resume")
    seconds = time.time() - started + prepared.seconds
    failures = merge_failures(trainer.state.failures, world)
    barrier(world)
    if world.main:
        if failures:
            write_problems(out / PROBLEMS_FILE, failures)
            warn(f"{len(failures)} image(s) could not be read and were skipped; listed in {out / PROBLEMS_FILE}")
        if not interrupted:
            calibrate_run(out, module, setup.net, setup.val_batches, setup.eval_inputs, device, prepared.card,
                          setup.fitted is not None)
            if joint is not None:  # the best epoch's heads, calibrated and stored beside the network
                finish_joint_targets(config, joint, module, setup.net, setup.val_batches, setup.eval_inputs,
                                     device, train_catalog, val_catalog, prepared.card, out)
                write_json(out / CARD_FILE, prepared.card.to_dict())
        plot_history(out / HISTORY_FILE, out / CURVES_FILE)
    # The other ranks leave together with rank 0, once it has written everything: a gloo rank that tore its
    # process group down while rank 0 was still calibrating aborted now and then ("terminate called without an
    # active exception", SIGABRT), which failed the whole run. If rank 0 fails here, torchrun stops the others.
    barrier(world)
    if not world.main:
        return TrainResult(out, best_epoch, best_metrics, seconds)
    if interrupted:  # saved; the caller (and `catalens train ... && next`) must not take this for a finished run
        raise KeyboardInterrupt
    info(f"done in {seconds:.0f} s; best epoch {best_epoch}; run directory: {out}")
    return TrainResult(out, best_epoch, best_metrics, seconds,
                       (setup.train_batches, setup.val_batches) if setup.fitted is not None else None)


def resolve_config(config: TrainConfig | None, resume: bool, overrides: dict) -> TrainConfig:
    """The config given, else the run's own config.yaml when resuming (epochs etc. may change), else the
    defaults with the overrides; the model's name made canonical."""
    if config is None:
        saved = Path(overrides.get("out") or "") / CONFIG_FILE
        if resume and overrides.get("out") and saved.is_file():
            config = make_config(saved, **overrides)
            if "group_by" not in saved.read_text() and overrides.get("group_by") is None:
                config.group_by = "photo"  # a run begun before splits grouped near-identical photos: same splits
        else:
            config = make_config(**overrides)
    config.model = canonical_model_name(config.model)  # `tf_efficientnet_lite0` -> `timm:tf_efficientnet_lite0`
    if config.model.startswith("ensemble:"):  # pretrained members, frozen: only the classifier trains
        config.pretrained = True
        config.freeze = "backbone" if config.freeze == "none" else config.freeze
    return config


def build_network(config: TrainConfig, num_classes: int, preprocessing: Preprocessing, out: Path, resume: bool,
                  device: torch.device) -> tuple[nn.Module, dict | None]:
    """The network, with its pretrained weights when asked (and where they came from, for the model card)."""
    module = create_model(config.model, num_classes, preprocessing.channels, preprocessing.input_size)
    pretrained = None
    if config.pretrained and resume and (out / CARD_FILE).is_file():
        pretrained = json.loads((out / CARD_FILE).read_text()).get("pretrained")
    elif config.pretrained:
        pretrained = load_pretrained(module, pretrained_backbone(config), config.weights)
    return module.to(device).to(memory_format=torch.channels_last), pretrained


@dataclass
class Prepared:
    setup: Setup
    card: ModelCard
    seconds: float  # spent preparing (caching features, fitting a closed-form head): part of the training time


def make_trainer(config: TrainConfig, mode, module: nn.Module, plan: FreezePlan, preprocessing: Preprocessing,
                 device: torch.device, catalog: Catalog, train_catalog: Catalog, val_catalog: Catalog | None, texts,
                 pretrained, world: World, resume: bool, callbacks: list[Callback] | None,
                 joint: JointTargets | None = None) -> tuple[Trainer, Prepared]:
    """The batches, optimiser and schedule, the mode's set-up (mode.prepare), the card and the Trainer with
    catalens's callbacks; a resumed run starts from its checkpoint."""
    out, classes = Path(config.out), catalog.classes
    shard = (world.rank, world.size) if world.distributed else None
    if joint is not None:
        joint.heads.to(device)
    optimizer, peak_lr = make_optimizer(config, module, joint.heads if joint is not None else None)
    train_batches = make_batches(train_catalog, preprocessing, config.batch_size // world.size, shuffle=True,
                                 balanced=config.balanced_sampling, seed=config.seed, workers=config.workers,
                                 shard=shard)
    val_batches = make_batches(val_catalog, preprocessing, max(config.batch_size, 512), workers=config.workers) \
        if val_catalog is not None and len(val_catalog) else None
    scheduler = make_scheduler(config, optimizer, peak_lr, len(train_batches))
    weight = class_weight_tensor(train_catalog, len(classes)).to(device) if config.class_weights else None
    criterion = nn.CrossEntropyLoss(weight=weight, label_smoothing=config.label_smoothing)
    state = TrainState(failures={str(problem["ref"]): problem["reason"] for problem in catalog.problems})
    if resume:
        state.epoch, state.best_epoch, state.best_score, state.best_metrics, state.stale = restore_checkpoint(
            out, module, optimizer, scheduler, config.epochs, len(train_batches), device, world.main)
    elif world.main:
        config.save(out / CONFIG_FILE)
    info(f"training {config.model} ({count_parameters(module):,} parameters) on {len(train_catalog):,} images, "
         f"{len(classes)} classes, validating on {len(val_catalog) if val_catalog is not None else 0:,}; "
         f"device {device}, input {preprocessing.input_size[0]}x{preprocessing.input_size[1]}")
    for note in catalog.notes:
        info(f"  data: {note}")

    started = time.time()
    image_inputs: Inputs = lambda images: preprocessing.normalize(images).contiguous(  # noqa: E731
        memory_format=torch.channels_last)
    setup = mode.prepare(Job(config, module, plan, preprocessing, device, len(classes), train_catalog, train_batches,
                             val_batches, image_inputs, get_preset(config.augment), texts, state.epoch))
    state.failures.update(setup.failures)
    attach_joint(joint, setup, config, resume)
    train_net = data_parallel(torch.compile(setup.net) if config.compile else setup.net, config, plan, state.epoch,
                              world, device)
    card = make_card(config, catalog, train_catalog, val_catalog, preprocessing, module, pretrained,
                     {"cached_features": setup.cached_features, "cached_prefix_blocks": setup.prefix_blocks,
                      "head": setup.head, "world_size": world.size, "global_batch": config.batch_size,
                      "batch_per_process": config.batch_size // world.size})
    history_path = out / HISTORY_FILE
    if world.main and (not resume or not history_path.exists()):
        with history_path.open("w", newline="") as handle:
            csv.writer(handle).writerow(HISTORY_COLUMNS)
    if setup.fitted is not None:  # fitted in closed form: the run directory is written now, no epochs follow
        state.best_epoch, state.best_metrics = 1, write_linear_fit(
            setup.net, setup.train_batches, setup.val_batches, device, classes, module, card, out,
            setup.fitted.seconds)
        if texts is not None:
            state.best_metrics = fit_text_heads(config, texts, setup.linear, setup.train_batches,
                                                setup.val_batches, len(classes), card, out)
        if has_targets(train_catalog):
            fit_target_heads(config, setup.linear, setup.train_batches, setup.val_batches, train_catalog,
                             val_catalog, card, out)
            write_json(out / CARD_FILE, card.to_dict())

    def evaluate(net, batches, to_inputs) -> dict:  # rank 0 validates; every rank gets its metrics
        return broadcast(evaluate_split(net, batches, to_inputs, device, len(classes)) if world.main else None, world)

    trainer = Trainer(
        net=setup.net, train_net=train_net, optimizer=optimizer, scheduler=scheduler, criterion=criterion,
        device=device, train_batches=setup.train_batches, val_batches=setup.val_batches,
        train_inputs=setup.train_inputs, eval_inputs=setup.eval_inputs, evaluate=evaluate,
        reduce=lambda values: all_sum(values, world, device), monitor=config.monitor,
        amp=config.amp and device.type == "cuda", state=state,
        extra_loss=(lambda batch: joint.loss(setup.net, batch)) if joint is not None else None,
        callbacks=[FreezeSchedule(plan, state.epoch, setup.freeze_hook),
                   *([joint] if joint is not None else []),  # its heads are on disk before the checkpoint is
                   *([HistoryWriter(history_path, HISTORY_COLUMNS),
                      RunDirectory(out, module, card, config.epochs)] if world.main else []),
                   *([EarlyStopping(config.patience, config.monitor)] if config.patience is not None else []),
                   *(callbacks or [])],
    )
    return trainer, Prepared(setup, card, time.time() - started)


def data_parallel(net, config: TrainConfig, plan: FreezePlan, start_epoch: int, world: World, device):
    """Under torchrun, the network wrapped by DDP: gradients averaged across the ranks after every backward."""
    if not world.distributed:
        return net
    if config.unfreeze_every:
        raise CatalensError("gradual unfreezing (--unfreeze-every) is not supported with --nproc > 1: DDP fixes "
                            "the trained parameters when it starts; use --freeze N, or one process")
    plan.apply(start_epoch)  # frozen parameters must be frozen before DDP registers the trained ones
    return nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)


def calibrate_run(out: Path, module, net, val_batches, eval_inputs, device, card: ModelCard, linear: bool) -> None:
    """Temperature scaling of the best weights on the validation split (calibrate.py), into the card. A --text
    run's heads were calibrated when they were fitted."""
    from safetensors.torch import load_file

    from catalens.engine.calibrate import calibrate_head, report_calibration

    if card.text is None:  # a --text run's heads were calibrated when they were fitted
        if not linear and (out / WEIGHTS_FILE).is_file():  # the best epoch's weights, not the last epoch's
            module.load_state_dict(load_file(str(out / WEIGHTS_FILE), device=str(device)))
        card.calibration = calibrate_head(net, val_batches, eval_inputs, device)
    write_json(out / CARD_FILE, card.to_dict())
    report_calibration(card.calibration or {})


class RunDirectory(Callback):
    """After each epoch: the last weights, the best ones (when the epoch was the best), the model card, and
    checkpoint.pt for --resume (written to a temporary name, then renamed: a kill never leaves half a file)."""

    def __init__(self, out: Path, module: nn.Module, card: ModelCard, total_epochs: int):
        self.out, self.module, self.card, self.total_epochs = out, module, card, total_epochs

    def on_epoch_end(self, trainer, epoch, row, metrics):
        out, state = self.out, trainer.state
        save_weights(self.module, out / LAST_WEIGHTS_FILE)
        if trainer.improved:
            shutil.copyfile(out / LAST_WEIGHTS_FILE, out / WEIGHTS_FILE)
        self.card.best_epoch, self.card.validation = state.best_epoch, state.best_metrics
        write_json(out / CARD_FILE, self.card.to_dict())
        with atomic_path(out / CHECKPOINT_FILE) as temporary:
            torch.save({
                "model": self.module.state_dict(), "optimizer": trainer.optimizer.state_dict(),
                "scheduler": trainer.scheduler.state_dict(), "epoch": epoch + 1, "total_epochs": self.total_epochs,
                "best_epoch": state.best_epoch, "best_score": float(state.best_score),
                "best_metrics": state.best_metrics, "stale": state.stale, "rng": torch.get_rng_state(),
            }, temporary)


def make_card(config: TrainConfig, catalog: Catalog, train_catalog: Catalog, val_catalog: Catalog | None,
              preprocessing: Preprocessing, module: nn.Module, pretrained: dict | None, how: dict) -> ModelCard:
    """The run's model card before training (best epoch and validation metrics are filled in as it goes)."""
    return ModelCard(
        architecture=config.model,
        classes=catalog.classes,
        preprocessing=preprocessing.to_dict(),
        num_params=count_parameters(module),
        data={
            "spec": config.data, "source": catalog.source, "identity": catalog.identity,
            "content": catalog.content_fingerprint(), "labels": config.labels,
            "options": asdict(data_options(config)), "fingerprint": catalog.fingerprint(),
            "train_items": len(train_catalog), "val_items": len(val_catalog) if val_catalog is not None else 0,
            "train_per_class": train_catalog.class_counts(), "notes": catalog.notes,
        },
        validation_data={"data": config.data, "split": "val", "items": len(val_catalog) if val_catalog is not None
                         else 0, "provenance": data_provenance(config.data), "how": validation_method(catalog)},
        training={"epochs": config.epochs, "augment": config.augment, "optimizer": config.optimizer,
                  "seed": config.seed, "freeze": config.freeze, "unfreeze_every": config.unfreeze_every,
                  **how},
        pretrained=pretrained,
        hierarchy={name: catalog.hierarchy[name] for name in catalog.classes if name in catalog.hierarchy}
        if catalog.hierarchy else None,
        level=catalog.level,
        calibration=uncalibrated("training has not finished"),
        created=utc_now(),
        catalens_version=__version__,
        torch_version=torch.__version__,
    )


def validation_method(catalog: Catalog) -> str:
    """How the validation split was made, in words (data/splits.py's notes): declared by the data, or carved by
    product, by groups of near-identical photos, or photo by photo."""
    made = [note for note in catalog.notes if note.startswith(("validation split carved", "validation and test"))]
    return made[-1] if made else "declared by the data (a val/ or validation/ folder, or a split column)"


def merge_failures(failures: dict[str, str], world: World) -> dict[str, str]:
    """Every rank's unreadable images, on rank 0 (each rank read its own share)."""
    if not world.distributed:
        return failures
    import torch.distributed as dist

    gathered: list[dict[str, str]] = [{} for _ in range(world.size)]
    dist.all_gather_object(gathered, failures)
    return {ref: reason for part in gathered for ref, reason in part.items()}


def restore_checkpoint(out: Path, module, optimizer, scheduler, epochs: int, steps_per_epoch: int, device,
                       main: bool = True):
    """Load checkpoint.pt into the network, optimiser and schedule; (start epoch, best epoch, best score, best
    metrics, stale epochs). Every rank of a data-parallel run loads it; only the main one trims history.csv."""
    state = torch.load(out / CHECKPOINT_FILE, map_location=device, weights_only=True)
    module.load_state_dict(state["model"])
    try:
        optimizer.load_state_dict(state["optimizer"])
    except ValueError as error:  # e.g. a checkpoint from a catalens with other parameter groups
        raise CatalensError(f"cannot resume {out}: its optimizer state does not fit this catalens version "
                            f"({str(error).splitlines()[0][:100]}); start a new run") from error
    if state.get("total_epochs") == epochs:
        scheduler.load_state_dict(state["scheduler"])
    else:  # the schedule was stretched or shortened: rebuild it and move it to where training stands
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for _ in range(state["epoch"] * steps_per_epoch):
                scheduler.step()
    start_epoch, best_epoch, best_score = state["epoch"], state["best_epoch"], state["best_score"]
    best_metrics, stale = state.get("best_metrics", {}), state.get("stale", 0)
    torch.set_rng_state(state["rng"])
    if main:
        trim_history(out / HISTORY_FILE, start_epoch)
    info(f"resuming {out} after epoch {start_epoch}")
    return start_epoch, best_epoch, best_score, best_metrics, stale


def training_texts(config: TrainConfig, train_catalog: Catalog, val_catalog: Catalog | None):
    """With --text: (columns, train texts, validation texts or None), checked; else None."""
    if not config.text:
        return None
    from catalens.models.fusion import catalog_texts, check_text, parse_text_columns

    columns = parse_text_columns(config.text)
    train_texts = check_text(train_catalog, columns, config.data)
    return columns, train_texts, catalog_texts(val_catalog.table, columns) if val_catalog is not None else None


def fit_text_heads(config: TrainConfig, texts, head: nn.Linear, train_batches, val_batches, num_classes: int,
                   card: ModelCard, out: Path) -> dict:
    """--text: the text-only and fused heads (models/fusion.py) beside the image head just fitted, each scored
    on the validation split; the card's validation metrics become the fused model's."""
    from catalens.engine.calibrate import calibrate_text_heads
    from catalens.models.fusion import fit_text_model, modal_logits

    columns, train_texts, val_texts = texts
    rows = train_batches.rows.numpy()
    model = fit_text_model(columns, train_batches.features[0].float().numpy(), [train_texts[i] for i in rows],
                           train_batches.labels.numpy(), num_classes, config.seed)
    model.save(out / TEXT_FILE, out / TEXT_WEIGHTS_FILE)
    validation = {}
    card.calibration = uncalibrated()
    if val_batches is not None and len(val_batches.labels):
        truth = val_batches.labels.numpy()
        rows_text = [val_texts[i] for i in val_batches.rows.numpy()]
        logits = modal_logits(model, head.weight.detach().cpu().numpy(), head.bias.detach().cpu().numpy(),
                              val_batches.features[0].float().numpy(), rows_text)
        card.calibration = calibrate_text_heads(logits, truth, np.array([bool(text) for text in rows_text]))
        for name in ("image", "text", "fused", "used"):
            predicted = logits[name].argmax(1)
            validation[name] = {"accuracy": float((predicted == truth).mean()),
                                "macro_f1": macro_f1(truth, predicted, num_classes)}
        info("validation: " + " | ".join(f"{name} acc {validation[name]['accuracy']:.4f} macro-F1 "
                                         f"{validation[name]['macro_f1']:.4f}" for name in ("image", "text", "fused")))
    card.text = dict(model.info, validation=validation)
    if validation:
        card.validation = dict(card.validation, accuracy=validation["used"]["accuracy"],
                               macro_f1=validation["used"]["macro_f1"])
    write_json(out / CARD_FILE, card.to_dict())
    return card.validation


def write_linear_fit(head, train_batches, val_batches, device, classes, module, card, out: Path,
                     seconds: float) -> dict:
    """The run directory of a fitted classifier: one history row, best = last weights, the card."""
    train = evaluate_split(head, train_batches, lambda features: features, device, len(classes))
    metrics = evaluate_split(head, val_batches, lambda features: features, device, len(classes)) \
        if val_batches is not None else {}
    row = {"epoch": 1, "lr": "", "train_loss": train["loss"], "train_accuracy": train["accuracy"],
           "val_loss": metrics.get("loss", ""), "val_accuracy": metrics.get("accuracy", ""),
           "val_macro_f1": metrics.get("macro_f1", ""), "images_per_s": "", "seconds": seconds}
    with (out / HISTORY_FILE).open("a", newline="") as handle:
        csv.writer(handle).writerow([row[c] for c in HISTORY_COLUMNS])
    summary = f"linear head: train acc {train['accuracy']:.4f}"
    if metrics:
        summary += f" | val loss {metrics['loss']:.4f} acc {metrics['accuracy']:.4f} macro-F1 {metrics['macro_f1']:.4f}"
    info(summary)
    save_weights(module, out / LAST_WEIGHTS_FILE)
    shutil.copyfile(out / LAST_WEIGHTS_FILE, out / WEIGHTS_FILE)
    card.best_epoch, card.validation = 1, metrics
    write_json(out / CARD_FILE, card.to_dict())
    return metrics


def data_provenance(data: str) -> str:
    return provenance(data) or REAL


def trim_history(path: Path, last_epoch: int) -> None:
    """Drop history rows written after the checkpoint a run resumes from (a kill can fall between the two)."""
    if not path.is_file():
        return
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    kept = rows[:1] + [row for row in rows[1:] if row and int(row[0]) <= last_epoch]
    if len(kept) != len(rows):
        with path.open("w", newline="") as handle:
            csv.writer(handle).writerows(kept)


def write_problems(path: Path, failures: dict[str, str]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["ref", "reason"])
        writer.writerows(sorted(failures.items()))


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
