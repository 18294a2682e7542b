"""Image embeddings of a whole catalog: the pooled features of a frozen backbone (a pretrained timm network, or a
trained run's), written batch by batch into a memory-mapped .npy, with the images that could not be read. Shared by
`catalens audit` and `catalens match`."""

from __future__ import annotations

from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from catalens.data.catalog import Catalog
from catalens.errors import CatalensError
from catalens.loading.batches import each_batch, make_batches
from catalens.loading.preprocess import Preprocessing

DEFAULT_BACKBONE = "tf_efficientnet_lite0"


@dataclass
class Embeddings:
    features: np.ndarray  # (N, D) float32, memory-mapped; rows of unreadable images stay zero
    readable: np.ndarray  # (N,) bool
    pixel_std: np.ndarray  # (N,) float32: standard deviation of the model-size pixels (0-255)
    failures: dict[int, str]  # row -> why the image could not be read
    source: str  # which network made the features


def feature_network(model: str | Path | None, backbone: str):
    """(network, preprocessing, description): a trained run's network, else a pretrained timm backbone."""
    if model:
        from catalens.rundir.run import Model

        loaded = Model.load(model, backend="torch")
        if loaded.module is None:
            raise CatalensError(f"--run {model}: an exported .onnx file has no feature layer; give the run "
                                "directory, or --backbone NAME")
        return loaded.module, loaded.preprocessing, f"the network of {model}"
    from catalens.models import canonical_model_name, create_model
    from catalens.models.pretrained import load_pretrained
    from catalens.models.timm_models import timm_preprocessing

    name = canonical_model_name(backbone)
    if not name.startswith("timm:"):
        raise CatalensError(f"--backbone {backbone}: give a timm backbone with pretrained weights, e.g. "
                            f"{DEFAULT_BACKBONE}")
    timm_name = name.removeprefix("timm:")
    preprocessing = Preprocessing.of_backbone(timm_preprocessing(timm_name))
    module = create_model(name, 2, 3, preprocessing.input_size)
    load_pretrained(module, timm_name)
    return module.eval(), preprocessing, f"{timm_name} (ImageNet weights, frozen)"


def embed(catalog: Catalog, module, preprocessing: Preprocessing, source: str, path: Path, batch_size: int = 64,
          workers: int | None = None) -> Embeddings:
    """Features of every image, written batch by batch into a memory-mapped .npy at `path` (bounded memory)."""
    from catalens.models.features import feature_function

    device = torch.device("cpu")
    extract = feature_function(module, preprocessing, device)
    n = len(catalog)
    features = None
    readable, pixel_std, failures = np.zeros(n, bool), np.zeros(n, np.float32), {}
    batches = make_batches(catalog, preprocessing, batch_size, workers=workers)
    failed: list[tuple[str, str]] = []
    with torch.inference_mode():
        with closing(each_batch(batches, "features", n, failed)) as stream:
            for batch in stream:
                if len(batch.rows):
                    vectors = extract(preprocessing.normalize(batch.images)).float().numpy()
                    if features is None:
                        features = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32,
                                                             shape=(n, vectors.shape[1]))
                    rows = batch.rows.numpy()
                    features[rows] = vectors
                    readable[rows] = True
                    pixel_std[rows] = batch.images.float().flatten(1).std(1).numpy()
    failures.update(failed)
    if features is None:
        raise CatalensError(f"no image of {catalog.source} could be read; check the data with "
                            "`catalens catalog stats DATA --verify`")
    features.flush()
    row_of_ref = {str(ref): row for row, ref in enumerate(catalog.table["ref"])}
    return Embeddings(features, readable, pixel_std, {row_of_ref.get(str(ref), -1): reason
                                                       for ref, reason in failures.items()}, source)
