"""Product-level prediction: a product's images are all predicted and their probabilities averaged (what the
CDiscount competition's top teams did). The submission file: submission.py."""

from __future__ import annotations

import numpy as np
import pandas as pd

from catalens.data.catalog import Catalog
from catalens.rundir.run import Model


def average_by_product(product_ids, probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(products in order of first appearance, mean probability per product, images per product)."""
    codes, products = pd.factorize(pd.Series(product_ids), sort=False)
    sums = np.zeros((len(products), probabilities.shape[1]), np.float64)
    np.add.at(sums, codes, probabilities)
    counts = np.bincount(codes, minlength=len(products))
    return np.asarray(products), (sums / counts[:, None]).astype(np.float32), counts


def level_names(model: Model, label: str) -> dict:
    """The category level names of a class, when the model was trained on a category tree."""
    hierarchy = model.card.hierarchy or {}
    return dict(hierarchy.get(label, {}))


def catalog_has_products(catalog: Catalog) -> bool:
    """True when some product has several images (or the source is a product dump): predictions are then
    given per product."""
    return catalog.source.startswith("bson:") or catalog.table["product_id"].nunique() < len(catalog)
