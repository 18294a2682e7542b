"""Run directories and the Model object that loads one.

A run directory holds everything needed to reproduce and use a model:
    config.yaml          the resolved training config (`catalens train --config run/config.yaml` re-runs it)
    model.safetensors    best weights (by the validation metric); last.safetensors: the last epoch's
    model_card.json      architecture, classes, preprocessing, metrics, data fingerprint
    checkpoint.pt        optimizer/scheduler state for `--resume` (tensors and plain types only)
    history.csv, training_curves.png, problems.csv (images that failed to decode, if any)
Loading reads the directory and never writes into it (the ONNX export is cached in the user cache).
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from catalens.cache import cache_root, writable_cache_file
from catalens.checksums import file_digest
from catalens.errors import CatalensError
from catalens.files import atomic_path, write_atomic
from catalens.loading.preprocess import Preprocessing, normalize_numpy, softmax_numpy
from catalens.models import create_model
from catalens.models.calibration import UNCALIBRATED, apply_top_label_map
from catalens.models.onnx_backend import OnnxRunner, export_onnx, onnx_available
from catalens.rundir.card import CARD_FORMAT, ModelCard  # noqa: F401 (CARD_FORMAT: its old home)
from catalens.rundir.layout import (
    CARD_FILE,
    INT8_FILE,
    ONNX_FILE,
    TARGETS_FILE,
    TARGETS_WEIGHTS_FILE,
    TEXT_FILE,
    TEXT_WEIGHTS_FILE,
    WEIGHTS_FILE,
)

# Images per model call on CPU, bounded by input pixels: 8 photos at 260 px, 668 Fashion-MNIST images. A batch of
# 256 photos through a three-backbone ensemble needs GBs of activations; small batches run as fast on a CPU.
CPU_BATCH_PIXELS = 2**19
# onnxruntime takes bigger chunks: Lite0 int8 ran at 475 photos/s at batch 32 and ~300 at batch 8 (2 cores)
ONNX_BATCH_PIXELS = 32 * 224 * 224
_TOLD_UNCALIBRATED: set[str] = set()  # runs that said so once in this process


def save_weights(module: nn.Module, path: Path) -> None:
    state = {key: value.detach().cpu().contiguous() for key, value in module.state_dict().items()}
    with atomic_path(path) as temporary:
        save_file(state, str(temporary))


def write_json(path: Path, data: dict) -> None:
    write_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def count_parameters(module: nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CatalensError("--device cuda was asked for but no CUDA GPU is available; use --device cpu")
    return torch.device(name)


def read_card(run_dir: Path) -> ModelCard:
    """The run directory's model card (format 1 cards migrated), or a one-line error."""
    path = Path(run_dir) / CARD_FILE
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise CatalensError(f"cannot read {path} ({str(error)[:100]}): the run directory is damaged; retrain") \
            from error
    return ModelCard.from_dict(raw, where=path)


class Model:
    """A trained classifier: `Model.load(run_dir).predict(images, k=5)`."""

    def __init__(self, module: nn.Module | None, card: ModelCard, path: Path | None = None, runner=None,
                 weights_path: Path | None = None):
        self.module = module.eval() if module is not None else None  # None for an exported .onnx file
        self.runner = runner  # an OnnxRunner when the onnx backend is used
        self.card = card
        self.path = path  # the run directory, or the .onnx file
        self.weights_path = weights_path  # the file whose size is the model's size on disk
        self.classes: list[str] = card.classes
        self.preprocessing = Preprocessing.from_dict(card.preprocessing)
        self.device = next(module.parameters()).device if module is not None else torch.device("cpu")
        self._fast: Any = None
        self.text: Any = None  # a TextModel (models/fusion.py) when the run was trained with --text
        self.targets: Any = None  # the heads of a --targets run (models/targets.py)
        self._features: Any = None

    @classmethod
    def load(cls, run_dir: str | Path, weights: str = WEIGHTS_FILE, device: str = "auto",
             backend: str = "auto", int8: bool = True, latency: bool = False) -> Model:
        """Load a run directory, or a file written by `catalens export` (onnx backend only). backend: torch,
        onnx (onnxruntime, CPU), or auto (onnx on CPU when installed). On onnxruntime, the run's int8 network is
        used when `catalens export --int8` checked it within tolerance (the card's `int8`), unless int8=False.
        latency: tuned for one request at a time (serve) rather than batches beside decoding workers."""
        run_dir = Path(run_dir)
        if backend not in ("auto", "torch", "onnx"):
            raise CatalensError(f"unknown backend {backend!r}; choose torch, onnx or auto")
        if run_dir.is_file() and run_dir.suffix == ".onnx":
            return cls.load_onnx(run_dir, backend, latency)
        card_path = run_dir / CARD_FILE
        if not card_path.is_file():
            hint = " (give the run directory that `catalens train --out` wrote)" if run_dir.exists() else ""
            raise CatalensError(f"no model at {run_dir}: {CARD_FILE} not found{hint}")
        card = read_card(run_dir)
        weights_path = run_dir / weights
        if not weights_path.is_file():
            raise CatalensError(f"{weights_path} not found; the run may not have finished an epoch yet")
        preprocessing = Preprocessing.from_dict(card.preprocessing)
        module = create_model(card.architecture, card.num_classes, preprocessing.channels,
                              (preprocessing.input_size[0], preprocessing.input_size[1]))
        try:
            module.load_state_dict(load_file(str(weights_path)))
        except (RuntimeError, OSError, ValueError) as error:
            first = str(error).strip().splitlines()[0][:200]
            raise CatalensError(f"{weights_path} does not fit the {card.architecture} in {CARD_FILE} ({first}); "
                                "the run directory is damaged or mixed up: retrain or restore it") from error
        target = pick_device(device)
        module = module.to(target)
        if target.type == "cpu":
            module = module.to(memory_format=torch.channels_last)
        runner, text, targets = None, None, None
        if card.text:  # image + text: the image side is the backbone's features (onnxruntime through features.py)
            from catalens.models.fusion import TextModel

            text = TextModel.load(run_dir / TEXT_FILE, run_dir / TEXT_WEIGHTS_FILE)
        if card.targets:  # several targets: every head reads the backbone's features, computed once
            from catalens.models.targets import Targets

            targets = Targets.load(run_dir / TARGETS_FILE, run_dir / TARGETS_WEIGHTS_FILE)
        if text is None and targets is None and (
                backend == "onnx" or (backend == "auto" and target.type == "cpu" and onnx_available())):
            try:
                runner = int8_runner(card, run_dir, weights_path, latency) \
                    if int8 and weights == WEIGHTS_FILE else None
                runner = runner or onnx_runner(module, card, run_dir, weights_path, latency)
            except Exception as error:  # noqa: BLE001 - one line, with the way out
                reason = str(error).strip().splitlines()[0][:160]
                if backend == "onnx":
                    if isinstance(error, CatalensError):
                        raise
                    raise CatalensError(f"ONNX export of {card.architecture} failed ({reason}); "
                                        "use --backend torch") from error
                from catalens.progress import warn

                warn(f"ONNX export failed ({reason}); using PyTorch")  # auto mode: only speed is lost
        if weights != WEIGHTS_FILE and card.calibration and card.calibration.get("status") == "calibrated":
            from catalens.models.calibration import uncalibrated

            card.calibration = uncalibrated(f"the calibration was fitted for {WEIGHTS_FILE}, not {weights}")
        model = cls(module, card, run_dir, runner, weights_path)
        model.text, model.targets = text, targets
        return model

    @classmethod
    def load_onnx(cls, path: Path, backend: str = "onnx", latency: bool = False) -> Model:
        """A model exported by `catalens export`: the file alone, run by onnxruntime."""
        if backend == "torch":
            raise CatalensError(f"{path} is an exported ONNX model: run it with --backend onnx (or auto), or give "
                                "the run directory for --backend torch")
        runner = OnnxRunner(path, spin=latency)
        if runner.card is None:
            raise CatalensError(f"{path} has no catalens metadata (class names, preprocessing); export it with "
                                "`catalens export RUN_DIR --format onnx --out FILE`")
        card = ModelCard.from_dict(runner.card, where=path)
        expected = [card.preprocessing["channels"], *card.preprocessing["input_size"]]
        shape = runner.session.get_inputs()[0].shape[1:]
        if any(isinstance(dim, int) and dim != want for dim, want in zip(shape, expected)):
            raise CatalensError(f"{path} takes inputs of shape {shape} but its metadata says {expected}; the file "
                                "was changed after export: export it again")
        return cls(None, card, path, runner, path)

    @property
    def calibration(self) -> dict:
        """The card's temperature scaling ({} for a run trained before catalens calibrated)."""
        return self.card.calibration or {}

    @property
    def calibrated(self) -> bool:
        return self.calibration.get("status") == "calibrated"

    @property
    def temperature(self) -> float:
        """The image head's temperature (1.0 when uncalibrated): probabilities are softmax(logits / T)."""
        return float(self.calibration.get("temperature") or 1.0)

    def answer_threshold(self, threshold: float | None = None, target_accuracy: float | None = None) -> float | None:
        """The probability under which an answer is withheld: `threshold` as given, or for `target_accuracy` the
        threshold that answered the most validation items at that accuracy (the card's risk-coverage curve)."""
        if threshold is not None and target_accuracy is not None:
            raise CatalensError("give --threshold P or --target-accuracy A, not both")
        if threshold is not None and not 0 <= threshold <= 1:
            raise CatalensError(f"--threshold {threshold:g} is not a probability: give a value between 0 and 1")
        if target_accuracy is None:
            return threshold
        from catalens.models.calibration import best_reachable, threshold_for

        if not 0 < target_accuracy < 1:
            raise CatalensError(f"--target-accuracy {target_accuracy:g} is not an accuracy: give a value between 0 "
                                "and 1, e.g. 0.98")
        curve = self.calibration.get("curve")
        if not self.calibrated or not curve or not curve.get("threshold"):
            why = self.calibration.get("reason") or "it was trained before catalens calibrated its probabilities"
            raise CatalensError(f"{self.path} has no validation curve to choose a threshold from ({why}); give "
                                "--threshold P, or retrain with a validation split")
        point = threshold_for(curve, target_accuracy)
        if point is None:
            best = best_reachable(curve)
            assert best is not None  # the curve has thresholds: checked above
            raise CatalensError(f"--target-accuracy {target_accuracy:g} is above what validation ever reached: at "
                                f"best {best['accuracy']:.2%} accuracy, answering {best['coverage']:.1%} of the "
                                f"validation items (--threshold {best['threshold']:.3f}); ask for at most "
                                f"{np.floor(best['accuracy'] * 1000) / 1000:g}")
        from catalens.progress import info, warn

        if self.text is not None:
            warn("this run reads text: its validation curve is that of answers given with text; a photo answered "
                 "without text (its image head alone) may reach another accuracy at this threshold")
        info(f"--target-accuracy {target_accuracy:g}: threshold {point['threshold']:.4f}, which answered "
             f"{point['coverage']:.1%} of the validation items at {point['accuracy']:.2%} accuracy")
        return point["threshold"]

    def say_if_uncalibrated(self) -> None:
        """Once per run and process, when it first gives probabilities: a model whose probabilities are not
        calibrated says so."""
        key = str(self.path)
        if self.calibrated or key in _TOLD_UNCALIBRATED:
            return
        _TOLD_UNCALIBRATED.add(key)
        from catalens.progress import info

        if self.card.calibration is None:
            info(f"{self.path}: trained before catalens calibrated its probabilities; they are uncalibrated "
                 "(retrain to calibrate them; predictions are unchanged)")
        else:
            info(f"{self.path}: probabilities are uncalibrated ({self.calibration.get('reason', UNCALIBRATED)})")

    @property
    def backend(self) -> str:
        """torch, onnx, or onnx-int8 (the run's checked int8 network)."""
        if self.runner is None:
            return "torch"
        return "onnx-int8" if (self.runner.card or {}).get("precision") == "int8" else "onnx"

    @property
    def num_params(self) -> int:
        return count_parameters(self.module) if self.module is not None else int(self.card.num_params)

    @property
    def network(self) -> nn.Module:
        """The PyTorch network; a model loaded from an exported .onnx file has none."""
        if self.module is None:
            raise CatalensError(f"{self.path} is an exported ONNX file: this needs the run directory it came from")
        return self.module

    def fast_module(self):
        """The network prepared for CPU inference: traced and frozen (BatchNorm folded into the convolutions)."""
        if self._fast is None:
            self._fast = self.module
            if self.device.type == "cpu":
                try:
                    import warnings

                    height, width = self.preprocessing.input_size
                    example = torch.zeros(2, self.preprocessing.channels, height, width).to(
                        memory_format=torch.channels_last)
                    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
                        warnings.simplefilter("ignore")
                        traced = torch.jit.trace(self.module.eval(), example)
                        self._fast = torch.jit.optimize_for_inference(torch.jit.freeze(traced))
                except Exception:  # noqa: BLE001 - tracing is an optimisation; eager always works
                    self._fast = self.module
        return self._fast

    def cpu_chunks(self, images: torch.Tensor) -> list[torch.Tensor]:
        if self.device.type != "cpu":
            return [images]
        height, width = self.preprocessing.input_size
        return list(images.split(max(1, CPU_BATCH_PIXELS // (height * width))))

    def logits(self, images: torch.Tensor, fast: bool = True) -> torch.Tensor:
        """uint8 batch (N, C, H, W) at the input size -> logits (N, classes)."""
        if self.runner is not None:
            return torch.from_numpy(self._runner_logits(images))
        if len(self.cpu_chunks(images)) > 1:
            return torch.cat([self.logits(part, fast) for part in self.cpu_chunks(images)])
        batch = self.preprocessing.normalize(images.to(self.device, non_blocking=True))
        if self.device.type == "cpu":
            batch = batch.contiguous(memory_format=torch.channels_last)
        module = self.fast_module() if fast else self.network
        with torch.inference_mode():
            return module(batch).float()

    @property
    def text_columns(self) -> list[str]:
        """The catalog columns the model reads besides the image (`--text`), or []."""
        return list(self.text.columns) if self.text is not None else []

    def image_features(self, images: torch.Tensor) -> np.ndarray:
        """uint8 batch -> the backbone's pooled features (what the heads read), as numpy."""
        if self._features is None:
            self._features = self.feature_function()
        batch = self.preprocessing.normalize(images.to(self.device, non_blocking=True))
        with torch.inference_mode():
            return self._features(batch).float().cpu().numpy()

    def feature_function(self):
        """On CPU with onnxruntime: the features graph exported once per weights and kept in the user cache
        (onnx_runner), so that every predict, sort, evaluate or serve of a --targets run does not export it again
        (10-30 s on 2 cores); else models/features.py's."""
        from catalens.models.features import feature_function, runner_function
        from catalens.models.onnx_backend import onnx_available

        if self.device.type == "cpu" and onnx_available() and self.weights_path is not None:
            try:
                return runner_function(onnx_runner(self.network, self.card, self.path, self.weights_path,
                                                   features=True))
            except Exception as error:  # noqa: BLE001 - an optimisation: the features can always be computed
                from catalens.progress import warn

                warn(f"the cached onnxruntime features graph is unavailable ({str(error).strip()[:120]}); "
                     "exporting it for this process")
        return feature_function(self.network, self.preprocessing, self.device)

    def target_probabilities(self, images: torch.Tensor) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """A --targets run, from one backbone pass: (its own head's softmax(logits / temperature), each target's
        calibrated probabilities, a tree's upper levels summed from their children)."""
        from catalens.models.timm_models import linear_classifier_of

        self.say_if_uncalibrated()
        features = self.image_features(images)
        head = linear_classifier_of(self.network)
        logits = features @ head.weight.detach().float().cpu().numpy().T + head.bias.detach().float().cpu().numpy()
        return softmax_numpy(logits / self.temperature), self.targets.probabilities(features)

    def modal_logits(self, images: torch.Tensor | None, texts: list[str]) -> dict[str, np.ndarray]:
        """A text model's logits by head (image, text, fused) and `used` (fusion.modal_logits); images None:
        text only."""
        from catalens.models.fusion import modal_logits
        from catalens.models.timm_models import linear_classifier_of

        self.say_if_uncalibrated()
        head = linear_classifier_of(self.network)
        features = self.image_features(images) if images is not None else None
        return modal_logits(self.text, head.weight.detach().float().cpu().numpy(),
                            head.bias.detach().float().cpu().numpy(),
                            features, texts, self.calibration.get("temperatures"))

    def probabilities(self, images: torch.Tensor, texts: list[str] | None = None) -> np.ndarray:
        """Calibrated class probabilities of a uint8 batch (softmax of the logits divided by the temperature fitted
        on validation, then the top-label map when validation chose one); a text model also reads each row's
        text ("" when it has none: the image head answers)."""
        return self.finish_probabilities(self.scaled_probabilities(images, texts))

    def scaled_probabilities(self, images: torch.Tensor, texts: list[str] | None = None) -> np.ndarray:
        """softmax(logits / temperature): the probabilities before the top-label map."""
        self.say_if_uncalibrated()
        if self.text is not None:
            texts = list(texts) if texts is not None else [""] * len(images)
            return softmax_numpy(self.modal_logits(images, texts)["used"])
        if self.targets is not None:
            return self.target_probabilities(images)[0]
        if self.runner is not None:
            return softmax_numpy(self._runner_logits(images) / self.temperature)
        return (self.logits(images) / self.temperature).softmax(dim=1).cpu().numpy()

    def finish_probabilities(self, scaled: np.ndarray) -> np.ndarray:
        """Temperature-scaled probabilities -> calibrated ones (the card's top-label map; the ranking is kept)."""
        mapping = self.calibration.get("top_label_map")
        return apply_top_label_map(scaled, mapping) if mapping else scaled

    def _runner_logits(self, images: torch.Tensor) -> np.ndarray:
        """onnxruntime logits with numpy pre-processing (no torch threads competing with onnxruntime's)."""
        height, width = self.preprocessing.input_size
        chunk = max(1, ONNX_BATCH_PIXELS // (height * width))
        return np.concatenate([self.runner.run(normalize_numpy(part.numpy(), self.preprocessing))
                               for part in images.split(chunk)])

    def predict(self, images, k: int = 5) -> list[list[tuple[str, float]]]:
        """Top-k (label, probability) for PIL images, file paths, or a uint8 batch tensor."""
        if isinstance(images, torch.Tensor):
            batch = images
        else:
            from catalens.data.images import load_image

            items = images if isinstance(images, (list, tuple)) else [images]
            batch = torch.stack([
                self.preprocessing.prepare(item if hasattr(item, "convert") else load_image(item)) for item in items
            ])
        probabilities = self.probabilities(batch)
        return [top_k(row, self.classes, k) for row in probabilities]


def int8_runner(card: ModelCard, run_dir: Path, weights_path: Path, spin: bool = False) -> OnnxRunner | None:
    """The run's int8 network when its check passed and it was made from these weights; else None."""
    path = run_dir / INT8_FILE
    if not (card.int8 or {}).get("status") == "used" or not path.is_file():
        return None
    try:
        runner = OnnxRunner(path, spin=spin)
    except CatalensError as error:
        from catalens.progress import warn

        warn(f"{path} cannot be read ({error}); using the float model: run `catalens export {run_dir} --int8` again")
        return None
    if not runner.card or runner.card.get("weights_sha256") != file_digest(weights_path):
        from catalens.progress import warn

        warn(f"{path} was made from other weights; using the float model: run `catalens export {run_dir} --int8` "
             "again")
        return None
    return runner


def onnx_runner(module: nn.Module, card: ModelCard, run_dir: Path, weights_path: Path, spin: bool = False,
                features: bool = False):
    """An onnxruntime session for these weights: the run's model.onnx when `catalens export` wrote it from
    them, else an export kept in the user cache (cache.py) under the weights' sha256. Loading never writes into
    the run directory: it may be read-only, or loaded by several processes at once. `features`: the graph of the
    pooled pre-logits instead (what a --targets run's heads read), kept in the cache the same way."""
    digest = file_digest(weights_path)
    key = hashlib.sha256(json.dumps([digest, card.architecture, card.preprocessing, *(["pre-logits"] if features
                                                                                     else [])], sort_keys=True)
                         .encode()).hexdigest()[:32]
    cached = cache_root() / "onnx" / f"{key}.onnx"

    def exported(places):
        for path in places:
            if path.is_file():
                try:
                    runner = OnnxRunner(path, spin=spin)
                except CatalensError:  # a damaged export: export again
                    continue
                if runner.card and runner.card.get("weights_sha256") == digest:
                    return runner
        return None

    from catalens.models.features import PreLogits, export_lock, find_cached_graph

    runner = exported((cached,) if features else (run_dir / ONNX_FILE, cached))
    if runner is None and features:
        module = PreLogits(module)
        # a frozen backbone: the graph its training extracted features with, when this machine trained it
        runner = find_cached_graph(module, Preprocessing.from_dict(card.preprocessing))
    if runner is not None:
        return runner
    cached = writable_cache_file("onnx", cached.name)
    with export_lock(cached):
        runner = exported((cached,))  # exported by another process while this one waited
        if runner is None:
            runner, _ = export_weights(module, card, weights_path, cached, digest)
    return OnnxRunner(cached, spin=True) if spin else runner


def export_weights(module: nn.Module | None, card: ModelCard, weights_path: Path | None, path: Path,
                   digest: str | None = None):
    """export_onnx with a card that ties the file to the weights it came from (sha256, file name)."""
    if module is None or weights_path is None:
        raise CatalensError("an exported .onnx file cannot be exported again: give the run directory")
    from catalens.models.features import with_cached_features

    record = dict(card.to_dict(), weights_sha256=digest or file_digest(weights_path), weights_file=weights_path.name)
    return with_cached_features(module, record, path) or export_onnx(copy.deepcopy(module).float(), record, path)


def export_model(run_dir: str | Path, out: str | Path, weights: str = WEIGHTS_FILE) -> dict:
    """Write the run's model as one self-contained ONNX file (weights, class names and preprocessing inside),
    checked against PyTorch; returns the file, its size and the max abs difference of the logits."""
    model = Model.load(run_dir, weights=weights, backend="torch", device="cpu")
    if model.text is not None:
        from catalens.progress import warn

        warn(f"{run_dir} also reads text (--text): the ONNX file holds the image model only; predict with the run "
             "directory to use the titles")
    if model.targets is not None:
        from catalens.progress import warn

        warn(f"{run_dir} has several targets (--targets/--tags): the ONNX file holds the first one only; predict "
             "with the run directory for every target")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    _, difference = export_weights(model.module, model.card, model.weights_path, out)
    return {"path": str(out), "size_mb": round(out.stat().st_size / 1e6, 3), "max_abs_difference": difference}


def top_k(probabilities: np.ndarray, classes: list[str], k: int) -> list[tuple[str, float]]:
    order = np.argsort(-probabilities)[: max(1, min(k, len(classes)))]
    return [(classes[i], float(probabilities[i])) for i in order]
