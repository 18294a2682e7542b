"""Image + title classification: late fusion of the frozen backbone's features with the titles' TF-IDF features.

`catalens train --text title` (or `title,description`) fits, beside the image-only linear head that every cached-
feature run fits, two more heads on the same training rows:
- text-only: a logistic regression on TF-IDF over words (1-2 grams) and characters (3-5 grams within words;
  models/text.py, the set-up match uses too);
- fused: one logistic regression on [image features (L2-normalised), word TF-IDF, character TF-IDF], each block
  of unit length: normalised, concatenated, one head.
Both weight each class by its inverse frequency; their L2 strength is chosen on a held-out fifth of the training
split (models/linear_head.py). The vocabularies go into text_model.json and the arrays into
text_model.safetensors (no pickle anywhere). At prediction a row with both an image and text
uses the fused head, a row without text the image-only head, and a row whose image is missing the text head.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from catalens.errors import CatalensError
from catalens.models.linear_head import choose_sparse_C, sparse_logistic
from catalens.models.neighbours import unit_rows
from catalens.models.text import TitleVectorizer, clean_title
from catalens.progress import info

TEXT_COLUMNS = ("title", "description")
MODALITIES = ("image", "text", "fused")


def parse_text_columns(spec: str | None) -> list[str]:
    """`title` or `title,description` -> the catalog's text columns; anything else is refused in one line."""
    columns = [part.strip() for part in str(spec or "").split(",") if part.strip()]
    unknown = [column for column in columns if column not in TEXT_COLUMNS]
    if not columns or unknown:
        raise CatalensError(f"--text takes {' or '.join(TEXT_COLUMNS)} (comma-separated), e.g. --text title; "
                            f"got {spec!r}")
    return columns


def catalog_texts(table, columns: list[str]) -> list[str]:
    """Each row's text: the named columns, cleaned (clean_title), joined by a space; "" when all are empty."""
    parts = [[clean_title(value) for value in table[column].tolist()] for column in columns]
    return [" ".join(part for part in row if part) for row in zip(*parts)]


def check_text(catalog, columns: list[str], data: str) -> list[str]:
    """The training texts, or a one-line error naming the columns the source has when none of them holds text."""
    texts = catalog_texts(catalog.table, columns)
    if not any(texts):
        have = [column for column in TEXT_COLUMNS if catalog.table[column].astype(str).str.strip().ne("").any()]
        source_columns = catalog.report.get("columns")
        where = f"; its columns are: {', '.join(source_columns)} (map one with --columns title=NAME)" \
            if source_columns else ""
        raise CatalensError(f"--text {','.join(columns)}: {data} has no text in {', '.join(columns)} "
                            f"(columns with text: {', '.join(have) or 'none'}){where}")
    return texts


def read_text_columns(model, spec: str | None, catalog=None, data: str = "") -> None:
    """`--text` on predict, evaluate and serve: which columns a text model reads (default: those it was trained
    on); refused for an image-only model, and for data without text in them when `catalog` is given."""
    if spec is None:
        return
    columns = parse_text_columns(spec)
    if model.text is None:
        raise CatalensError(f"{model.path} was trained without --text and reads images only; retrain it with "
                            f"--text {spec} to use the text")
    model.text.columns = columns
    if catalog is not None:
        check_text(catalog, columns, data)


@dataclass
class TextModel:
    """The text-only and fused heads of a run, and the vectorizer they read."""

    columns: list[str]
    vectorizer: TitleVectorizer
    text_weight: np.ndarray  # (classes, text width)
    text_bias: np.ndarray
    fused_weight: np.ndarray  # (classes, image features + text width)
    fused_bias: np.ndarray
    info: dict

    def text_matrix(self, texts: list[str]):
        return self.vectorizer.transform(texts)

    def text_logits(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self.text_matrix(texts) @ self.text_weight.T) + self.text_bias

    def fused_logits(self, features: np.ndarray, texts: list[str]) -> np.ndarray:
        width = features.shape[1]
        image = unit_rows(features) @ self.fused_weight[:, :width].T
        text = np.asarray(self.text_matrix(texts) @ self.fused_weight[:, width:].T)
        return image + text + self.fused_bias

    def save(self, description: Path, weights: Path) -> None:
        """The vectoriser and heads: vocabularies and columns as JSON in `description`, arrays in `weights`."""
        from safetensors.numpy import save_file

        vocabularies, arrays = self.vectorizer.state()
        arrays.update(text_weight=self.text_weight, text_bias=self.text_bias, fused_weight=self.fused_weight,
                      fused_bias=self.fused_bias)
        save_file({key: np.ascontiguousarray(value, dtype=np.float32) for key, value in arrays.items()},
                  str(weights))
        description.write_text(json.dumps({"columns": self.columns, "vocabularies": vocabularies,
                                           "info": self.info}, ensure_ascii=False))

    @classmethod
    def load(cls, description: Path, weights: Path) -> TextModel:
        from safetensors.numpy import load_file

        run_dir = description.parent
        try:
            saved = json.loads(description.read_text())
            arrays = load_file(str(weights))
            return cls(saved["columns"], TitleVectorizer.from_state(saved["vocabularies"], arrays),
                       arrays["text_weight"], arrays["text_bias"], arrays["fused_weight"], arrays["fused_bias"],
                       saved.get("info", {}))
        except (OSError, ValueError, KeyError) as error:
            raise CatalensError(f"cannot read the text model in {run_dir} ({str(error)[:100]}): the run directory "
                                "is damaged; retrain it with --text") from error


def fit_text_model(columns: list[str], features: np.ndarray, texts: list[str], labels: np.ndarray,
                   num_classes: int, seed: int = 0) -> TextModel:
    """The text-only and fused heads on the training rows: `features` (N, D) image features, `texts` (N,)."""
    from scipy.sparse import csr_matrix, hstack

    started = time.time()
    labels = np.asarray(labels)
    vectorizer_ = TitleVectorizer.fit(texts)
    text = vectorizer_.transform(texts)
    fused = hstack([csr_matrix(unit_rows(features)), text]).tocsr()
    heads, chosen = {}, {}
    for name, x in (("text", text), ("fused", fused)):
        C, scores = choose_sparse_C(x, labels, num_classes, seed)
        heads[name] = sparse_logistic(x, labels, num_classes, C)
        chosen[name] = {"C": C, "held_out_accuracy": {str(c): round(s, 4) for c, s in scores.items()}}
        if scores:
            info(f"{name} head: held-out accuracy by C: " + ", ".join(f"{c:g}: {s:.4f}" for c, s in scores.items())
                 + f"; chose C={C:g}")
    empty = sum(1 for item in texts if not item)
    details = {"columns": columns, "word_terms": len(vectorizer_.word.vocabulary_),
               "char_ngrams": len(vectorizer_.char.vocabulary_), "image_features": int(features.shape[1]),
               "heads": chosen, "empty_texts": empty, "seconds": round(time.time() - started, 1),
               "method": f"class-balanced logistic regressions on TF-IDF (words 1-2, characters "
                         f"{vectorizer_.char.ngram_range[0]}-{vectorizer_.char.ngram_range[1]}) and, for the "
                         "fused head, the L2-normalised image features beside them"}
    return TextModel(columns, vectorizer_, *heads["text"], *heads["fused"], details)


def modal_logits(text_model: TextModel, image_weight: np.ndarray, image_bias: np.ndarray,
                 features: np.ndarray | None, texts: list[str],
                 temperatures: dict[str, float] | None = None) -> dict[str, np.ndarray]:
    """Logits of each head for the same rows (`features` None: no images), and `used`: fused where a row has
    text, the image head where it has none, the text head when there are no images. `temperatures` (head ->
    T, fitted on validation: models/calibration.py) divide each head's logits before `used` is chosen."""
    scale = temperatures or {}
    has_text = np.array([bool(text) for text in texts])
    out = {"text": text_model.text_logits(texts) / scale.get("text", 1.0)}
    if features is None:
        out["used"] = out["text"]
        return out
    out["image"] = (np.asarray(features, np.float32) @ image_weight.T + image_bias) / scale.get("image", 1.0)
    out["fused"] = text_model.fused_logits(features, texts) / scale.get("fused", 1.0)
    out["used"] = np.where(has_text[:, None], out["fused"], out["image"])
    return out
