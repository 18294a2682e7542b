"""Head-only training on cached backbone features: a frozen backbone gives the same features every epoch,
so they are computed once (with the horizontal flip of each image as a second view when the augmentation
preset flips) and the classifier trains on the vectors, in seconds instead of minutes."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
from pathlib import Path

import torch
from torch import nn

from catalens.cache import cache_root, writable_cache_file
from catalens.errors import CatalensError
from catalens.loading.batches import Batch, EpochOrder, each_batch
from catalens.models.onnx_backend import OnnxRunner, export_onnx, onnx_available
from catalens.progress import warn

# Images per forward pass when extracting on CPU: for tf_efficientnet_lite0 at 224 px on 2 cores, batch 8 ran
# at 47 images/s, batch 32 at 29 (BENCHMARKS.md): big activations fall out of cache.
CPU_CHUNK = 8
# Images per onnxruntime call: a whole 256-image batch through the Lite0+1+2 mirror ensemble at 260 px held
# ~17 GB of activations and was killed for memory on a 23 GB machine; 16 keeps it small at the same speed.
ONNX_CHUNK = 16


def pre_logits(module: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """What a timm model feeds its classifier: features, pooled (and any pre-logits layers)."""
    return module.forward_head(module.forward_features(images), pre_logits=True)


def chunked(function, images: torch.Tensor) -> torch.Tensor:
    """function(images) computed CPU_CHUNK images at a time on CPU (at once on a GPU)."""
    chunk = CPU_CHUNK if images.device.type == "cpu" else len(images)
    return torch.cat([function(part) for part in images.split(chunk)])


def chunked_pre_logits(module: nn.Module, images: torch.Tensor) -> torch.Tensor:
    return chunked(lambda part: pre_logits(module, part), images)


class PreLogits(nn.Module):
    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return pre_logits(self.module, images)


def feature_function(module: nn.Module, preprocessing, device, extractor: nn.Module | None = None):
    """images -> features (what `extractor` computes; default: the pooled pre-logits of `module`). On CPU
    through onnxruntime when it is installed: for tf_efficientnet_lite0 at 224 px on 2 cores it ran at 123
    images/s against 30 for PyTorch eager (bench/latency.py); else PyTorch."""
    extractor = extractor if extractor is not None else PreLogits(module)
    if device.type == "cpu" and onnx_available():
        try:
            return runner_function(cached_graph(extractor, preprocessing))
        except Exception as error:  # noqa: BLE001 - an optimisation: PyTorch always works
            warn(f"onnxruntime feature extraction unavailable ({str(error).strip()[:120]}); using PyTorch")
    return lambda images: chunked(extractor, images)


def cached_graph(extractor: nn.Module, preprocessing) -> OnnxRunner:
    """The extractor's onnxruntime graph, exported once into the user cache (cache.py) under a fingerprint of
    what it computes (graph_fingerprint). Every run that extracts features of the same pretrained backbone reuses
    it: an export took 10-30 s on 2 cores, more than extracting a small catalog. Two processes that need the same
    graph at once export it once: the second waits for the first (export_lock)."""
    extractor = without_classifier(copy.deepcopy(extractor).float())
    height, width = preprocessing.input_size
    name = graph_name(extractor, preprocessing)
    runner = cached_file(name)
    if runner is not None:
        return runner
    path = writable_cache_file("onnx", name)
    with export_lock(path):
        runner = cached_file(name)  # exported by another process while this one waited
        if runner is not None:
            return runner
        card = {"classes": [], "preprocessing": {"input_size": [height, width], "channels": preprocessing.channels}}
        runner, _ = export_onnx(extractor, card, path)
    return runner


def find_cached_graph(extractor: nn.Module, preprocessing) -> OnnxRunner | None:
    """cached_graph's graph when the cache holds it already; None (no export) when it does not."""
    return cached_file(cached_graph_path(extractor, preprocessing).name)


def cached_graph_path(extractor: nn.Module, preprocessing) -> Path:
    """Where cached_graph keeps the extractor's graph in the user cache (it may not be there)."""
    return cache_root() / "onnx" / graph_name(without_classifier(copy.deepcopy(extractor).float()), preprocessing)


def graph_name(extractor: nn.Module, preprocessing) -> str:
    return f"features-{graph_fingerprint(extractor, preprocessing)}.onnx"


def cached_file(name: str) -> OnnxRunner | None:
    """The cache's graph `name` (a read-only cache is still read); None when it has none, or a damaged one."""
    path = cache_root() / "onnx" / name
    if path.is_file():
        try:
            return OnnxRunner(path)
        except CatalensError:  # a damaged file: export again
            return None
    return None


@contextlib.contextmanager
def export_lock(path):
    """Held while `path` is exported: another process exporting the same file waits for it instead of spending
    the same 10-40 s at the same moment. After 10 minutes of waiting (a process stuck or killed mid-export leaves
    no lock: the system releases it) it exports without the lock."""
    from filelock import FileLock, Timeout

    lock = FileLock(f"{path}.lock", timeout=600)
    try:
        lock.acquire()
    except Timeout:
        yield
        return
    try:
        yield
    finally:
        lock.release()


def with_cached_features(module: nn.Module, card: dict, path) -> tuple[OnnxRunner, float] | None:
    """`module`'s logits graph made of its backbone's features graph, when the user cache already holds it (a
    frozen run trained on this machine, on CPU with onnxruntime, extracted its features through it), and one Gemm
    for its linear classifier: a second or two, against 10-47 s for exporting the whole network again on 2 cores.
    Returns what export_onnx returns; None, with nothing written to `path`, when the classifier is not one linear
    layer on the pre-logits, the cache lacks the graph, or the composed graph disagrees with PyTorch (checked at a
    batch size other than the features graph's export)."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    from catalens.loading.preprocess import Preprocessing
    from catalens.models.onnx_backend import save_with_card

    classifier = module.get_classifier() if hasattr(module, "get_classifier") else None
    if not isinstance(classifier, nn.Linear):
        return None
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.composed")
    try:
        module = copy.deepcopy(module).float().eval().cpu().to(memory_format=torch.contiguous_format)
        preprocessing = Preprocessing.from_dict(card["preprocessing"])
        source = cached_graph_path(PreLogits(module), preprocessing)
        if not source.is_file():
            return None
        graph = onnx.load(str(source))
        (output,) = graph.graph.output
        for node in graph.graph.node:
            node.output[:] = ["pre_logits" if value == output.name else value for value in node.output]
        weight = classifier.weight.detach().float().cpu().numpy()
        bias = classifier.bias.detach().float().cpu().numpy()
        graph.graph.initializer.extend([numpy_helper.from_array(weight, "classifier.weight"),
                                        numpy_helper.from_array(bias, "classifier.bias")])
        graph.graph.node.append(helper.make_node("Gemm", ["pre_logits", "classifier.weight", "classifier.bias"],
                                                 [output.name], transB=1))
        batch = output.type.tensor_type.shape.dim[0]
        graph.graph.output[0].CopyFrom(helper.make_tensor_value_info(
            output.name, onnx.TensorProto.FLOAT, [batch.dim_param or batch.dim_value or "batch", weight.shape[0]]))
        del graph.metadata_props[:]
        runner = save_with_card(graph, card, temporary)
        height, width = preprocessing.input_size
        example = torch.randn(3, preprocessing.channels, height, width)  # the features graph was exported at 2
        with torch.no_grad():
            expected = module(example).numpy()
        difference = float(np.abs(runner.run(example.numpy()) - expected).max())
        if difference > 1e-3 * max(1.0, float(np.abs(expected).max())):
            return None
        os.replace(temporary, path)  # published only once checked
        return OnnxRunner(path), difference
    except Exception:  # noqa: BLE001 - a shortcut: the caller exports the whole network instead
        return None
    finally:
        temporary.unlink(missing_ok=True)


def graph_fingerprint(extractor: nn.Module, preprocessing) -> str:
    """What an exported graph computes: the input; the torch, timm, onnx and catalens versions; the source of
    every catalens class in it and of the export code (an editable install keeps its version while its code
    changes); its layers (repr) and every plain attribute of its modules (the block a Prefix stops at, an ensemble
    member's input size); its parameters and buffers, byte for byte."""
    import inspect

    import onnx
    import timm

    import catalens

    classes = sorted({type(layer) for layer in extractor.modules() if type(layer).__module__.startswith("catalens")},
                     key=lambda kind: kind.__qualname__)
    from catalens.models import onnx_backend

    # the export code too: a composed run graph (with_cached_features) is served, exported and quantized
    sources = [inspect.getsource(inspect.getmodule(kind)) for kind in classes] + [inspect.getsource(onnx_backend)]
    plain = (bool, int, float, str, tuple, list, dict, type(None))
    described = [list(preprocessing.input_size), preprocessing.channels, torch.__version__, timm.__version__,
                 onnx.__version__, catalens.__version__, sources, repr(extractor),
                 [[name, type(layer).__name__, sorted((key, repr(value)) for key, value in vars(layer).items()
                                                      if not key.startswith("_")
                                                      and key not in ("training", "num_classes")
                                                      and isinstance(value, plain))]
                  for name, layer in extractor.named_modules()]]
    fingerprint = hashlib.sha256(json.dumps(described).encode())
    for name, tensor in [*extractor.named_parameters(), *extractor.named_buffers()]:
        fingerprint.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        fingerprint.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return fingerprint.hexdigest()[:32]


def without_classifier(extractor: nn.Module) -> nn.Module:
    """PreLogits never calls the network's classifier: it is replaced by an identity, so that runs on the same
    backbone with other classes (another new classifier) share one features graph."""
    if isinstance(extractor, PreLogits) and hasattr(extractor.module, "get_classifier"):
        classifier = extractor.module.get_classifier()
        for name, layer in extractor.module.named_modules():
            if layer is classifier and name:
                parent, _, attribute = name.rpartition(".")
                setattr(extractor.module.get_submodule(parent) if parent else extractor.module, attribute,
                        nn.Identity())
                break
    return extractor


def runner_function(runner):
    """images -> features through an onnxruntime session, in chunks of ONNX_CHUNK."""
    return lambda images: torch.cat([torch.from_numpy(runner.run(part.float().contiguous().cpu().numpy()))
                                     for part in images.split(ONNX_CHUNK)])


@torch.inference_mode()
def extract_features(module: nn.Module, batches, prepare, device, flip: bool, description: str, features=None,
                     dtype: torch.dtype = torch.float32, rows: list | None = None):
    """(features (views, N, ...), labels (N,), failures) over `batches`; views = 2 with the flipped images.
    `features` maps a prepared batch to feature vectors (default: the module in PyTorch), kept as `dtype`;
    `rows`, when given, receives each batch's catalog rows (the order of the features)."""
    module.eval()
    features = features or (lambda images: chunked_pre_logits(module, images))
    views, labels, failures = [], [], []
    with contextlib.closing(each_batch(batches, description, failures=failures)) as stream:
        for batch in stream:
            if len(batch.labels):
                images = prepare(batch.images.to(device, non_blocking=True))
                outputs = [features(images)]
                if flip:
                    outputs.append(features(images.flip(3)))
                views.append(torch.stack(outputs).to(dtype).cpu())
                labels.append(batch.labels)
                if rows is not None:
                    rows.append(batch.rows)
    if not views:
        return torch.empty(0), torch.empty(0, dtype=torch.int64), failures
    return torch.cat(views, dim=1), torch.cat(labels), failures


class FeatureBatches(EpochOrder):
    """Batches of cached feature vectors in the same per-epoch order as image batches; in training, each item's
    view (original or flipped) is drawn per epoch."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor, batch_size: int, shuffle: bool, seed: int,
                 balanced: bool = False):
        super().__init__(labels.numpy(), batch_size, shuffle, balanced, seed)
        self.features = features
        self.rows: torch.Tensor | None = None  # the catalog row of each item, when the cache kept them

    def __iter__(self):
        n = len(self.labels)
        order = self.epoch_order()
        if order is None:
            order, view = torch.arange(n), torch.zeros(n, dtype=torch.int64)
        else:
            view = torch.randint(len(self.features), (n,), generator=self.generator)
        for start in range(0, n, self.batch_size):
            rows = order[start:start + self.batch_size]
            yield Batch(self.features[view[rows], rows], self.labels[rows], rows)
