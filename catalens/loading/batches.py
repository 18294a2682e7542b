"""Batches of uint8 model-size images from a Catalog.

In-memory sources (Fashion-MNIST) are sliced straight from a tensor: no per-image Python work.
File sources are decoded by DataLoader worker processes; an image that fails to decode is dropped
from its batch and reported (ref, reason) so the caller can warn, count and list it. `each_batch` is the one
batch loop of inference: progress bar and failures (callers close it: `with closing(each_batch(...))`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from catalens.data.catalog import Catalog
from catalens.data.images import describe_failure
from catalens.loading.preprocess import Preprocessing
from catalens.progress import make_progress


@dataclass
class Batch:
    images: torch.Tensor  # uint8 (N, C, H, W) at the model's input size
    labels: torch.Tensor  # int64 (N,), -1 when unlabelled
    rows: torch.Tensor  # int64 (N,), row numbers in the catalog
    failures: list[tuple[str, str]] = field(default_factory=list)  # (ref, reason) of images that failed


def default_workers() -> int:
    return min(4, os.cpu_count() or 1)


class ImageDataset(Dataset):
    def __init__(self, catalog: Catalog, preprocessing: Preprocessing):
        self.refs = catalog.table["ref"].tolist()
        self.labels = catalog.labels
        self.reader = catalog.reader
        self.preprocessing = preprocessing

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, row: int):
        ref = self.refs[row]
        try:
            image = self.preprocessing.prepare(self.reader.read(ref))
        except Exception as error:  # noqa: BLE001 - a bad file is reported, never fatal
            return None, int(self.labels[row]), row, (str(ref), describe_failure(error))
        return image, int(self.labels[row]), row, None


def collate(items) -> Batch:
    good = [item for item in items if item[0] is not None]
    failures = [item[3] for item in items if item[0] is None]
    if not good:
        return Batch(torch.empty(0, dtype=torch.uint8), torch.empty(0, dtype=torch.int64),
                     torch.empty(0, dtype=torch.int64), failures)
    return Batch(
        torch.stack([item[0] for item in good]),
        torch.tensor([item[1] for item in good], dtype=torch.int64),
        torch.tensor([item[2] for item in good], dtype=torch.int64),
        failures,
    )


def balanced_weights(labels: np.ndarray) -> torch.Tensor:
    counts = np.bincount(labels[labels >= 0], minlength=max(1, labels.max() + 1))
    weights = np.where(labels >= 0, 1.0 / np.maximum(counts[labels.clip(min=0)], 1), 0.0)
    return torch.as_tensor(weights, dtype=torch.double)


class EpochOrder:
    """The order of in-memory items per epoch: shuffled, class-balanced (drawn with replacement) or as stored.
    Each epoch's order depends only on (seed, epoch), so a resumed run sees the same batches. With `shard`
    (rank, world size) a rank takes every world-size-th item of the epoch's order, padded so that every rank
    runs the same number of steps (as torch's DistributedSampler does)."""

    def __init__(self, labels: np.ndarray, batch_size: int, shuffle: bool, balanced: bool, seed: int,
                 shard: tuple[int, int] | None = None):
        self.labels = torch.tensor(np.asarray(labels))  # a copy: catalog arrays can be read-only
        self.batch_size, self.shuffle, self.balanced = batch_size, shuffle, balanced
        self.weights = balanced_weights(np.asarray(labels)) if balanced else None
        self.seed, self.shard = seed, shard
        self.generator = torch.Generator().manual_seed(seed)

    def set_epoch(self, epoch: int) -> None:
        self.generator.manual_seed(self.seed + epoch)

    def items_per_rank(self) -> int:
        n = len(self.labels)
        return n if self.shard is None else -(-n // self.shard[1])

    def __len__(self) -> int:
        return -(-self.items_per_rank() // self.batch_size)

    def epoch_order(self) -> torch.Tensor | None:
        """Row numbers for this epoch, or None for the stored order."""
        n = len(self.labels)
        if self.balanced:
            order = torch.multinomial(self.weights, n, replacement=True, generator=self.generator)
        elif self.shuffle:
            order = torch.randperm(n, generator=self.generator)
        elif self.shard is None:
            return None
        else:
            order = torch.arange(n)
        if self.shard is not None:
            rank, world = self.shard
            padded = torch.cat([order, order[:self.items_per_rank() * world - n]])
            order = padded[rank::world]
        return order


class ArrayBatches(EpochOrder):
    """Batches sliced from an in-memory uint8 tensor, resized on the fly when the model wants another size."""

    def __init__(self, catalog: Catalog, preprocessing: Preprocessing, batch_size: int, shuffle: bool,
                 balanced: bool, seed: int, shard: tuple[int, int] | None = None):
        super().__init__(catalog.labels, batch_size, shuffle, balanced, seed, shard)
        rows = catalog.table["ref"].to_numpy(np.int64)
        images = torch.from_numpy(np.ascontiguousarray(catalog.arrays[rows]))
        self.images = images.unsqueeze(1) if images.ndim == 3 else images.permute(0, 3, 1, 2).contiguous()
        if preprocessing.channels == 3 and self.images.shape[1] == 1:
            self.images = self.images.expand(-1, 3, -1, -1)
        elif preprocessing.channels == 1 and self.images.shape[1] == 3:
            weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            self.images = (self.images.float() * weights).sum(1, keepdim=True).round().to(torch.uint8)
        self.size = tuple(preprocessing.input_size)

    def __iter__(self):
        order = self.epoch_order()
        in_order = order is None
        order = torch.arange(len(self.labels)) if in_order else order
        for start in range(0, len(order), self.batch_size):
            rows = order[start:start + self.batch_size]
            images = self.images[start:start + self.batch_size] if in_order else self.images[rows]
            if tuple(images.shape[-2:]) != self.size:
                images = F.interpolate(images.float(), size=self.size, mode="bilinear", antialias=True,
                                       align_corners=False).round().clamp(0, 255).to(torch.uint8)
            yield Batch(images, self.labels[rows], rows)


class FileBatches:
    """Batches decoded from files (or any reader) by DataLoader worker processes. With `shard` (rank, world size)
    each rank reads only its own rows, through torch's DistributedSampler (shuffled per epoch, padded to equal
    length): for a BSON dump, the rank seeks to its own index entries."""

    def __init__(self, catalog: Catalog, preprocessing: Preprocessing, batch_size: int, shuffle: bool,
                 balanced: bool, seed: int, workers: int | None = None, shard: tuple[int, int] | None = None):
        dataset = ImageDataset(catalog, preprocessing)
        generator = torch.Generator().manual_seed(seed)
        sampler = None
        if shard is not None:
            if balanced:
                from catalens.errors import CatalensError

                raise CatalensError("--balanced-sampling is not supported with --nproc > 1 yet; use "
                                    "--class-weights, or train on one process")
            sampler = torch.utils.data.DistributedSampler(dataset, num_replicas=shard[1], rank=shard[0],
                                                          shuffle=shuffle, seed=seed)
        elif balanced:
            sampler = torch.utils.data.WeightedRandomSampler(
                balanced_weights(catalog.labels), len(dataset), replacement=True, generator=generator
            )
        self.seed, self.generator = seed, generator
        workers = default_workers() if workers is None else workers
        self.loader = DataLoader(
            dataset, batch_size=batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
            num_workers=workers, collate_fn=collate, generator=generator,
            persistent_workers=False, prefetch_factor=4 if workers else None,
        )

    def set_epoch(self, epoch: int) -> None:
        self.generator.manual_seed(self.seed + epoch)
        if isinstance(self.loader.sampler, torch.utils.data.DistributedSampler):
            self.loader.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        return iter(self.loader)


def make_batches(catalog: Catalog, preprocessing: Preprocessing, batch_size: int = 256, shuffle: bool = False,
                 balanced: bool = False, seed: int = 0, workers: int | None = None,
                 shard: tuple[int, int] | None = None):
    """Batches of the catalog's images; `shard` (rank, world size): this rank's share only (data-parallel)."""
    if catalog.arrays is not None:
        return ArrayBatches(catalog, preprocessing, batch_size, shuffle, balanced, seed, shard)
    return FileBatches(catalog, preprocessing, batch_size, shuffle, balanced, seed, workers, shard)


def each_batch(batches, description: str, total: int | None = None, failures: list | None = None,
               show_progress: bool = True):
    """The one batch loop of inference (predict, sort, embeddings, cached features): each batch in turn under a
    progress bar, which counts items (read or failed) out of `total`, or batches when `total` is None; every
    failure (ref, reason) is appended to `failures` before its batch is handed on."""
    with make_progress(disable=not show_progress) as bar:
        task = bar.add_task(description, total=len(batches) if total is None else total)
        for batch in batches:
            if failures is not None:
                failures.extend(batch.failures)
            yield batch
            bar.advance(task, 1 if total is None else len(batch.rows) + len(batch.failures))
