"""An index of a BSON product dump (CDiscount's format), built in one streaming pass without decoding images.

Each document is `{_id: int, category_id: int, imgs: [{picture: <JPEG bytes>}, ...]}` (no `category_id`
in test files). The pass reads only the element headers of each document and jumps over the picture bytes
using their length prefixes, so it touches a few bytes per image instead of all of them; the file is mapped in
windows that are released as the pass moves on, so memory stays flat however large the file is.

Per product the index keeps: `id`, `category` (-1 when absent), the document's byte `offset` and `length`,
the number of `images`, a bitmask `bad` of images that are not JPEG bytes (the first 8), and `flags`
(see FLAG_*). It is saved as `FILE.catalens-index` (raw records) + `FILE.catalens-index.json` beside the file,
or under the cache directory when that folder is not writable, and reused while the file is unchanged.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numba import njit

from catalens.cache import cache_root
from catalens.errors import CatalensError
from catalens.files import atomic_path, write_atomic
from catalens.progress import make_progress

INDEX_VERSION = 1
RECORD = np.dtype([("id", "<i8"), ("category", "<i8"), ("offset", "<i8"), ("length", "<i4"),
                   ("images", "<i2"), ("bad", "u1"), ("flags", "u1")])
FLAG_NO_CATEGORY = 1  # no integer category_id (normal in test files)
FLAG_NO_IMGS = 2  # no imgs array
FLAG_BAD_ID = 4  # _id missing or not an integer
FLAG_NO_PICTURE = 8  # an element of imgs without picture bytes (counted in `bad`)

# Walk status codes (numba cannot raise rich errors cheaply): why the walk stopped.
OK, FULL, TRUNCATED, BAD_LENGTH, BAD_DOCUMENT = 0, 1, 2, 3, 4
MAX_DOCUMENT = 16 * 1024 * 1024  # BSON's own limit on a document's size
WINDOW = 16 * 1024 * 1024  # bytes mapped at a time (per thread): the mapped pages count in RSS
CHUNK = 65536  # records per call of the compiled walk


@njit(cache=True, nogil=True, inline="always")
def _i32(buf, p):
    value = np.int64(buf[p]) | (np.int64(buf[p + 1]) << 8) | (np.int64(buf[p + 2]) << 16) | (
        np.int64(buf[p + 3]) << 24)
    return value - (np.int64(1) << 32) if value >= (np.int64(1) << 31) else value


@njit(cache=True, nogil=True)
def _skip_value(buf, kind, p, stop):
    """Position after a value of BSON type `kind` starting at p, or -1 when it overruns `stop` or is unknown."""
    if kind == 0x01 or kind == 0x09 or kind == 0x11 or kind == 0x12:
        end = p + 8
    elif kind == 0x10:
        end = p + 4
    elif kind == 0x08:
        end = p + 1
    elif kind == 0x0A or kind == 0x06 or kind == 0x7F or kind == 0xFF:
        end = p
    elif kind == 0x07:
        end = p + 12
    elif kind == 0x02 or kind == 0x0D or kind == 0x0E:
        if p + 4 > stop:
            return -1
        end = p + 4 + _i32(buf, p)
    elif kind == 0x03 or kind == 0x04:
        if p + 4 > stop:
            return -1
        size = _i32(buf, p)
        end = p + size if size >= 5 else -1
    elif kind == 0x05:
        if p + 5 > stop:
            return -1
        size = _i32(buf, p)
        end = p + 5 + size if size >= 0 else -1
    elif kind == 0x13:
        end = p + 16
    else:
        return -1
    return end if 0 <= end <= stop else -1


@njit(cache=True, nogil=True)
def _name_end(buf, p, stop):
    while p < stop and buf[p] != 0:
        p += 1
    return p if p < stop else -1


# Field names, matched byte for byte (a key that merely starts and ends like one, e.g. customer_id, is not it)
KEY_ID = np.frombuffer(b"_id", np.uint8)
KEY_CATEGORY = np.frombuffer(b"category_id", np.uint8)
KEY_IMGS = np.frombuffer(b"imgs", np.uint8)
KEY_PICTURE = np.frombuffer(b"picture", np.uint8)


@njit(cache=True, nogil=True, inline="always")
def _name_is(buf, name, size, key):
    """Is the element name buf[name:name + size] exactly `key`?"""
    if size != key.shape[0]:
        return False
    for i in range(size):
        if buf[name + i] != key[i]:
            return False
    return True


@njit(cache=True, nogil=True, inline="always")
def _integer(buf, kind, p):
    """A BSON int32 (0x10) or int64 (0x12) value at p."""
    if kind == 0x10:
        return _i32(buf, p)
    return (_i32(buf, p) & 0xFFFFFFFF) | (_i32(buf, p + 4) << 32)


@njit(cache=True, nogil=True, inline="always")
def _picture_is_jpeg(buf, p, stop):
    """Walk an image document's elements from p to stop: 1 if its `picture` bytes start with the JPEG magic,
    0 if not (or it has none), -1 if the document is malformed."""
    jpeg = 0
    while p < stop:
        kind = buf[p]
        name_end = _name_end(buf, p + 1, stop)
        if name_end < 0:
            return -1
        end = _skip_value(buf, kind, name_end + 1, stop)
        if end < 0:
            return -1
        if kind == 0x05 and _name_is(buf, p + 1, name_end - p - 1, KEY_PICTURE):  # int32 size, subtype, bytes
            data = name_end + 1 + 5
            magic = end - data >= 3 and buf[data] == 0xFF and buf[data + 1] == 0xD8 and buf[data + 2] == 0xFF
            jpeg = 1 if magic else 0
        p = end
    return jpeg


@njit(cache=True, nogil=True)
def _parse_document(buf, start, length, record):
    """Fill record = [id, category, images, bad, flags] from the document at start; False if malformed."""
    stop = start + length - 1  # the document's terminating zero
    if buf[stop] != 0:
        return False
    p = start + 4
    flags = FLAG_NO_CATEGORY | FLAG_NO_IMGS | FLAG_BAD_ID
    images = 0
    bad = 0
    record[0] = -1
    record[1] = -1
    while p < stop:
        kind = buf[p]
        name = p + 1
        q = _name_end(buf, name, stop)
        if q < 0:
            return False
        value = q + 1
        end = _skip_value(buf, kind, value, stop)
        if end < 0:
            return False
        size = q - name
        if _name_is(buf, name, size, KEY_ID):
            if kind == 0x10 or kind == 0x12:
                record[0] = _integer(buf, kind, value)
                flags &= ~FLAG_BAD_ID
        elif _name_is(buf, name, size, KEY_CATEGORY):
            if kind == 0x10 or kind == 0x12:
                record[1] = _integer(buf, kind, value)
                flags &= ~FLAG_NO_CATEGORY
        elif kind == 0x04 and _name_is(buf, name, size, KEY_IMGS):
            flags &= ~FLAG_NO_IMGS
            a = value + 4
            array_stop = end - 1
            while a < array_stop:
                element_kind = buf[a]
                r = _name_end(buf, a + 1, array_stop)
                if r < 0:
                    return False
                element_end = _skip_value(buf, element_kind, r + 1, array_stop)
                if element_end < 0:
                    return False
                jpeg = 0
                if element_kind == 0x03:  # {picture: binary, ...}
                    jpeg = _picture_is_jpeg(buf, r + 1 + 4, element_end - 1)
                    if jpeg < 0:
                        return False
                if jpeg == 0:
                    flags |= FLAG_NO_PICTURE
                    if images < 8:
                        bad |= 1 << images
                images += 1
                a = element_end
        p = end
    if p != stop:
        return False
    record[2] = images
    record[3] = bad
    record[4] = flags
    return True


@njit(cache=True, nogil=True)
def _walk(buf, base, at_eof, out, limit):
    """Index the documents that start in buf[:limit] (buf: a window of the file starting at file offset `base`).

    Returns (records written, position in buf where the walk stopped, status). A document that does not fit
    in the window is left for the next window unless the window reaches the end of the file (TRUNCATED)."""
    n = 0
    p = 0
    end = buf.shape[0]
    record = np.zeros(5, np.int64)
    while p < limit:
        if n == out.shape[0]:
            return n, p, FULL
        if p + 4 > end:
            return n, p, TRUNCATED if at_eof else OK
        length = _i32(buf, p)
        if length < 5 or length > MAX_DOCUMENT:
            return n, p, BAD_LENGTH
        if p + length > end:
            return n, p, TRUNCATED if at_eof else OK
        if not _parse_document(buf, p, length, record):
            return n, p, BAD_DOCUMENT
        out[n]["id"] = record[0]
        out[n]["category"] = record[1]
        out[n]["offset"] = base + p
        out[n]["length"] = length
        out[n]["images"] = min(record[2], 32767)
        out[n]["bad"] = record[3]
        out[n]["flags"] = record[4]
        n += 1
        p += length
    return n, p, OK


@dataclass
class BsonIndex:
    """The index of one BSON file: a structured array of RECORD plus what was wrong with the file."""

    path: Path
    records: np.ndarray
    problems: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    reused: bool = False

    @property
    def labelled(self) -> bool:
        """True when products carry a category_id (a train file), False for a test file."""
        return is_labelled(self.records)

    def summary(self) -> dict:
        records = self.records
        return {"file": str(self.path), "products": int(len(records)), "images": int(records["images"].sum()),
                "labelled": self.labelled, "problems": len(self.problems), "seconds": round(self.seconds, 3),
                "reused": self.reused}


def index_location(path: Path) -> Path:
    """FILE.catalens-index beside the file when its folder is writable, else under the cache directory."""
    if os.access(path.parent, os.W_OK):
        return path.with_name(path.name + ".catalens-index")
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    folder = cache_root() / "bson-index"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{path.name}.{digest}.catalens-index"


def file_signature(path: Path) -> dict:
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def open_index(path: str | Path, rebuild: bool = False, show_progress: bool = True) -> BsonIndex:
    """The index of a BSON file: the saved one when the file is unchanged, else built (and saved) now."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CatalensError(f"BSON file {path} does not exist")
    location = index_location(path)
    meta_path = location.with_name(location.name + ".json")
    if not rebuild and meta_path.is_file() and location.is_file():
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError:
            meta = {}
        if meta.get("version") == INDEX_VERSION and meta.get("file") == file_signature(path):
            records = np.fromfile(location, dtype=RECORD)
            if len(records) == meta.get("products"):
                return BsonIndex(path, records, meta.get("problems", []), meta.get("seconds", 0.0), reused=True)
    index = build_index(path, location, show_progress=show_progress)
    write_atomic(meta_path, json.dumps({  # two processes indexing the same file at once: both write whole files
        "version": INDEX_VERSION, "file": file_signature(path), "products": len(index.records),
        "record": RECORD.descr, "seconds": index.seconds, "problems": index.problems,
    }, indent=1))
    return index


def build_index(path: Path, location: Path, show_progress: bool = True, threads: int | None = None) -> BsonIndex:
    """One pass over the file; records stream to `location`, so memory stays flat.

    The file is cut into one part per thread (each cut moved to the next document that parses, and the one
    after it); the compiled walk releases the GIL, so the parts are indexed in parallel."""
    started = time.perf_counter()
    size = path.stat().st_size
    threads = max(1, threads or (min(4, os.cpu_count() or 1) if size > WINDOW else 1))
    with open(path, "rb") as source, make_progress() as bar:
        task = bar.add_task(f"indexing {path.name}", total=size) if show_progress else None
        cuts = [0] + [next_document(source, size * k // threads, size) for k in range(1, threads)]
        bounds = sorted({cut for cut in cuts if cut is not None}) + [size]
        parts = list(zip(bounds[:-1], bounds[1:]))
        files = [location.with_name(f"{location.name}.{os.getpid()}.part{k}") for k in range(len(parts))]

        def advance(completed):
            if task is not None:
                bar.advance(task, completed)

        with ThreadPoolExecutor(len(parts)) as pool:
            results = list(pool.map(lambda args: index_part(source, *args, size, advance), zip(parts, files)))
    problems, end = [], 0
    with atomic_path(location) as merged, open(merged, "wb") as sink:
        for file, (part_end, part_problems) in zip(files, results):
            records = np.fromfile(file, dtype=RECORD)
            file.unlink()
            records = records[records["offset"] >= end]  # a part that ran past its cut already holds these
            records.tofile(sink)
            problems += [problem for problem in part_problems if problem["offset"] >= end]
            end = max(end, part_end)
    records = np.fromfile(location, dtype=RECORD)
    problems = [{"ref": f"offset {p['offset']}", "reason": p["reason"]} for p in problems]
    problems += record_problems(records)
    return BsonIndex(path, records, problems, time.perf_counter() - started)


def index_part(source, part: tuple[int, int], file: Path, size: int, advance) -> tuple[int, list[dict]]:
    """Index the documents starting in [start, stop) (one may end past stop) into `file`, window by window.
    Returns the offset where the walk ended and the damage it met."""
    start, stop = part
    out = np.zeros(CHUNK, RECORD)
    problems: list[dict] = []
    position = start
    with open(file, "wb") as sink:
        while position < stop:
            # Map a window starting at or before `position`; a document (<= 16 MB) always fits in one.
            window_start = position - position % mmap.ALLOCATIONGRANULARITY
            window_size = min(WINDOW, size - window_start)
            at_eof = window_start + window_size == size
            limit = min(window_size, stop - window_start)
            with mmap.mmap(source.fileno(), window_size, offset=window_start, access=mmap.ACCESS_READ) as window:
                view = np.frombuffer(window, dtype=np.uint8)
                local, status = position - window_start, FULL
                while status == FULL:
                    n, stopped, status = _walk(view[local:], window_start + local, at_eof, out, limit - local)
                    out[:n].tofile(sink)
                    local += stopped
                del view
            before, position = position, window_start + local
            if status == TRUNCATED:
                problems.append({"offset": position, "reason": "truncated document at the end of the file "
                                 f"({size - position} bytes); ignored"})
                position = size
            elif status in (BAD_LENGTH, BAD_DOCUMENT):
                following = next_document(source, position + 1, size)
                skipped = (following if following is not None else size) - position
                reason = "corrupted length prefix" if status == BAD_LENGTH else "malformed document"
                problems.append({"offset": position, "reason": f"{reason}; {skipped} bytes skipped"})
                position = following if following is not None else size
            advance(position - before)
    return position, problems


def next_document(source, offset: int, size: int) -> int | None:
    """The first offset >= `offset` where a well-formed document starts and the next one parses too (or the file
    ends): found by the `_id` element that opens every document, then checked by parsing."""
    scratch = np.zeros(2, RECORD)
    with mmap.mmap(source.fileno(), 0, access=mmap.ACCESS_READ) as whole:
        position = offset + 5
        while True:
            found = whole.find(b"_id\x00", position)
            if found < 0:
                return None
            candidate = found - 5  # int32 length and a type byte come first
            length = int.from_bytes(whole[candidate:candidate + 4], "little", signed=True)
            if 5 <= length <= MAX_DOCUMENT and candidate + length <= size:
                span = min(size - candidate, length + MAX_DOCUMENT)
                view = np.frombuffer(whole, dtype=np.uint8, count=span, offset=candidate)  # no copy
                n, stopped, _ = _walk(view, candidate, candidate + span == size, scratch, span)
                del view
                if n == 2 or (n == 1 and stopped == span):
                    return candidate
            position = found + 1


def is_labelled(records: np.ndarray) -> bool:
    """Does any product carry a category_id? (a train file; a test file has none)"""
    return bool(((records["flags"] & FLAG_NO_CATEGORY) == 0).any())


def record_problems(records: np.ndarray) -> list[dict]:
    """Per-product problems the index found: no imgs, an empty list, pictures that are not JPEG, a bad _id, and
    (in a labelled file) a missing category_id."""
    problems = []
    labelled = is_labelled(records)

    def add(mask, reason):
        for record in records[mask]:
            problems.append({"ref": f"product {record['id']} (offset {record['offset']})", "reason": reason})

    add((records["flags"] & FLAG_BAD_ID) != 0, "_id missing or not an integer; product ignored")
    add((records["flags"] & FLAG_NO_IMGS) != 0, "no imgs field; product ignored")
    add(((records["flags"] & FLAG_NO_IMGS) == 0) & (records["images"] == 0), "empty imgs list; product ignored")
    if labelled:
        add((records["flags"] & FLAG_NO_CATEGORY) != 0, "no category_id; product ignored")
    for record in records[records["bad"] != 0]:
        numbers = [str(i) for i in range(8) if record["bad"] & (1 << i)]
        problems.append({"ref": f"product {record['id']} (offset {record['offset']})",
                         "reason": f"image(s) {', '.join(numbers)} not JPEG bytes; the others are used"})
    return problems
