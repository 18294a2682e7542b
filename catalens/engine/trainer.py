"""The epoch loop, with hook points: everything around an optimisation step (history, checkpoints, early stopping,
freezing schedules, EMA, loggers) is a Callback, so adding one does not mean editing the loop.

    trainer = Trainer(net=net, train_net=net, optimizer=optimizer, scheduler=scheduler, criterion=criterion,
                      device=device, train_batches=train_batches, val_batches=val_batches,
                      train_inputs=augment, eval_inputs=normalize, evaluate=evaluate_split,
                      callbacks=[HistoryWriter(path, HISTORY_COLUMNS), EarlyStopping(5, "accuracy")])
    state = trainer.fit(start_epoch=0, epochs=10)     # TrainState: best epoch, best metrics, ...

Hooks, in order within an epoch: on_epoch_start (after the network is put in training mode), on_batch_end (after
each optimiser step), on_epoch_end (with the history row and the validation metrics, after the best-so-far state
is updated), on_checkpoint (after on_epoch_end has saved). A callback stops training after the current epoch by
setting `trainer.state.stop`.
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from rich.progress import TextColumn
from torch import nn

from catalens.errors import CatalensError
from catalens.progress import info, make_progress


@dataclass
class TrainState:
    epoch: int = 0  # epochs finished
    best_epoch: int = 0
    best_score: float = -math.inf
    best_metrics: dict = field(default_factory=dict)
    stale: int = 0  # epochs since the best one
    stop: bool = False  # set by a callback: stop after this epoch
    failures: dict = field(default_factory=dict)  # image ref -> why it could not be read


class Callback:
    """Override the hooks you need; each gets the Trainer (its state, network, optimiser)."""

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None: ...

    def on_batch_end(self, trainer: Trainer, epoch: int, loss: float, size: int) -> None: ...

    def on_epoch_end(self, trainer: Trainer, epoch: int, row: dict, metrics: dict) -> None: ...

    def on_checkpoint(self, trainer: Trainer, epoch: int) -> None: ...


@dataclass
class Trainer:
    net: nn.Module  # what is evaluated (the classifier alone on cached features)
    train_net: Callable[..., torch.Tensor]  # what the step runs (net, or torch.compile(net))
    optimizer: torch.optim.Optimizer
    scheduler: object
    criterion: nn.Module
    device: torch.device
    train_batches: object  # iterable of Batch with set_epoch() and len()
    val_batches: object | None
    train_inputs: Callable  # batch images -> network input (augmented)
    eval_inputs: Callable
    evaluate: Callable  # (net, batches, to_inputs) -> metrics dict ({} without validation)
    monitor: str = "accuracy"  # accuracy | macro_f1 | loss: what "best" means
    reduce: Callable | None = None  # [seen, correct, loss sum] of this process -> of all (data-parallel)
    amp: bool = False
    callbacks: list[Callback] = field(default_factory=list)
    extra_loss: Callable | None = None  # batch -> a loss added to the criterion's (the other targets' heads)
    state: TrainState = field(default_factory=TrainState)

    def __post_init__(self):
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)

    def fit(self, start_epoch: int, epochs: int) -> TrainState:
        for epoch in range(start_epoch, epochs):
            self.run_epoch(epoch, epochs)
            if self.state.stop:
                break
        return self.state

    def run_epoch(self, epoch: int, epochs: int) -> None:
        started = time.time()
        self.train_batches.set_epoch(epoch)
        self.net.train()
        for callback in self.callbacks:
            callback.on_epoch_start(self, epoch)
        seen, correct, loss_sum = 0, 0, 0.0
        extra = TextColumn("loss {task.fields[loss]:.3f} acc {task.fields[acc]:.3f} {task.fields[speed]:,.0f} img/s",
                           markup=False)
        with make_progress(extra) as bar:
            task = bar.add_task(f"epoch {epoch + 1}/{epochs}", total=len(self.train_batches), loss=0.0, acc=0.0,
                                speed=0.0)
            for batch in self.train_batches:
                for ref, reason in batch.failures:
                    self.state.failures.setdefault(ref, reason)
                if len(batch.labels):
                    loss, hits = self.step(batch, epoch)
                    seen += len(batch.labels)
                    loss_sum += loss * len(batch.labels)
                    correct += hits
                    for callback in self.callbacks:
                        callback.on_batch_end(self, epoch, loss, len(batch.labels))
                bar.update(task, advance=1, loss=loss_sum / max(1, seen), acc=correct / max(1, seen),
                           speed=seen / max(1e-9, time.time() - started))
        train_seconds = time.time() - started
        if self.reduce is not None:
            seen, correct, loss_sum = self.reduce([seen, correct, loss_sum])
        metrics = self.evaluate(self.net, self.val_batches, self.eval_inputs) if self.val_batches is not None else {}
        row = {
            "epoch": epoch + 1, "lr": self.optimizer.param_groups[0]["lr"], "train_loss": loss_sum / max(1, seen),
            "train_accuracy": correct / max(1, seen), "val_loss": metrics.get("loss", ""),
            "val_accuracy": metrics.get("accuracy", ""), "val_macro_f1": metrics.get("macro_f1", ""),
            "images_per_s": seen / max(1e-9, train_seconds), "seconds": time.time() - started,
        }
        self.update_best(epoch, metrics)
        for callback in self.callbacks:
            callback.on_epoch_end(self, epoch, row, metrics)
        for callback in self.callbacks:
            callback.on_checkpoint(self, epoch)

    def step(self, batch, epoch: int) -> tuple[float, int]:
        """One optimisation step; (loss, correct predictions)."""
        inputs = self.train_inputs(batch.images.to(self.device, non_blocking=True))
        labels = batch.labels.to(self.device, non_blocking=True)
        low = torch.bfloat16 if self.device.type == "cpu" else torch.float16
        with torch.autocast(self.device.type, dtype=low, enabled=self.amp):
            logits = self.train_net(inputs)
            loss = self.criterion(logits.float(), labels)
            if self.extra_loss is not None:
                loss = loss + self.extra_loss(batch)
        if not torch.isfinite(loss):
            raise CatalensError(f"the loss became {loss.item()} in epoch {epoch + 1}; lower --lr")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return loss.item(), int((logits.argmax(1) == labels).sum().item())

    def update_best(self, epoch: int, metrics: dict) -> None:
        state = self.state
        state.epoch = epoch + 1
        if self.monitor == "loss" and metrics:
            score = -metrics["loss"]
        else:
            score = metrics.get(self.monitor, epoch)
        if score > state.best_score:
            state.best_score, state.best_epoch, state.best_metrics, state.stale = score, epoch + 1, metrics, 0
        else:
            state.stale += 1

    @property
    def improved(self) -> bool:
        """Was the epoch that just ended the best so far?"""
        return self.state.stale == 0


class HistoryWriter(Callback):
    """One row per epoch in history.csv, and the epoch's summary line."""

    def __init__(self, path: Path, columns: list[str]):
        self.path, self.columns = path, columns

    def on_epoch_end(self, trainer, epoch, row, metrics):
        with self.path.open("a", newline="") as handle:
            csv.writer(handle).writerow([row[column] for column in self.columns])
        summary = f"epoch {epoch + 1}: train loss {row['train_loss']:.4f} acc {row['train_accuracy']:.4f}"
        if metrics:
            summary += f" | val loss {metrics['loss']:.4f} acc {metrics['accuracy']:.4f} " \
                       f"macro-F1 {metrics['macro_f1']:.4f}"
        info(summary + f" | {row['images_per_s']:,.0f} img/s")


class EarlyStopping(Callback):
    def __init__(self, patience: int, monitor: str):
        self.patience, self.monitor = patience, monitor

    def on_epoch_end(self, trainer, epoch, row, metrics):
        if metrics and trainer.state.stale >= self.patience:
            info(f"early stopping: no {self.monitor} improvement for {self.patience} epochs")
            trainer.state.stop = True


class FreezeSchedule(Callback):
    """Which backbone stages train in each epoch (finetune.FreezePlan), and frozen BatchNorm statistics."""

    def __init__(self, plan, start_epoch: int, all_batchnorm_frozen: Callable | None = None):
        self.plan, self.start_epoch, self.all_batchnorm_frozen = plan, start_epoch, all_batchnorm_frozen

    def on_epoch_start(self, trainer, epoch):
        plan = self.plan
        changed = epoch == self.start_epoch or plan.trainable_stages(epoch) != plan.trainable_stages(epoch - 1)
        if plan.active and changed:
            plan.apply(epoch)
            info(f"epoch {epoch + 1}: {plan.describe(epoch)}")
        plan.freeze_batchnorm()
        if self.all_batchnorm_frozen is not None:
            self.all_batchnorm_frozen()
