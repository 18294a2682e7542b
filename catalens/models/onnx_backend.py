"""ONNX export and onnxruntime inference: the fast CPU path for evaluate and predict.

The exported file is self-contained (weights inside, dynamic batch axis) and carries the class names and
preprocessing in its metadata, so the file alone is a usable model.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from catalens.errors import CatalensError
from catalens.extras import installed
from catalens.files import atomic_path


def onnx_available() -> bool:
    return installed("onnxruntime")


def export_onnx(module: nn.Module, card: dict, path: Path) -> tuple[OnnxRunner, float]:
    """Export `module` (eval mode, CPU) to `path`; returns a session on the file and the max abs difference of
    its outputs against PyTorch."""
    preprocessing = card["preprocessing"]
    height, width = preprocessing["input_size"]
    module = module.eval().cpu().to(memory_format=torch.contiguous_format)
    example = torch.randn(2, preprocessing["channels"], height, width)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings(), open(os.devnull, "w") as devnull:
        warnings.simplefilter("ignore")
        with contextlib.redirect_stdout(devnull):
            program = torch.onnx.export(
                module, (example,), dynamo=True, external_data=False, input_names=["images"],
                output_names=["logits"], dynamic_shapes=({0: torch.export.Dim("batch", min=1)},), verbose=False,
            )
    runner = save_with_card(program.model_proto, card, path)
    with torch.no_grad():
        expected = module(example).numpy()
    return runner, float(np.abs(runner.run(example.numpy()) - expected).max())


def save_with_card(model, card: dict, path: Path) -> OnnxRunner:
    """Write the ONNX `model` to `path` (whole or not at all) with the card, classes and preprocessing in its
    metadata (the file alone is a usable model); a session on it."""
    import onnx

    metadata = {"catalens_card": json.dumps(card), "classes": json.dumps(card["classes"]),
                "preprocessing": json.dumps(card["preprocessing"])}
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    with atomic_path(path) as temporary:
        onnx.save_model(model, str(temporary))
    return OnnxRunner(path)


class OnnxRunner:
    """An onnxruntime session over an exported catalens model. `spin`: its threads busy-wait between operators,
    which saves ~1 ms per call at batch 1 (serve) but takes CPU from the processes decoding the next batch
    (sort, predict, evaluate: 228 against 196 photos/s sorting with Lite0 int8 on 2 cores, BENCHMARKS.md)."""

    def __init__(self, path: Path, threads: int | None = None, spin: bool = False):
        try:
            import onnxruntime as ort
        except ImportError as error:
            raise CatalensError("onnxruntime is not installed; pip install onnxruntime") from error
        if not Path(path).is_file():
            raise CatalensError(f"ONNX model {path} not found")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        self.path = Path(path)
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # noqa: BLE001 - onnxruntime raises its own types for damaged files
            reason = str(error).strip().splitlines()[0][:160]
            raise CatalensError(f"{path} is not a readable ONNX model ({reason}); export it again with "
                                "`catalens export`") from error
        self.input_name = self.session.get_inputs()[0].name
        meta = self.session.get_modelmeta().custom_metadata_map
        self.card = json.loads(meta["catalens_card"]) if "catalens_card" in meta else None

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})[0]
