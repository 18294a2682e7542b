"""Files that catalens writes: whole or not at all, and never inside the folder being read.

    with atomic_path(out / "model.onnx") as temporary:   # write to `temporary` by any means (a library's save)
        onnx.save_model(model, str(temporary))
    write_atomic(out / "metrics.json", text)              # the same for bytes or text in hand
    check_outside(output_dir, input_dir, "OUTPUT_DIR", "INPUT_DIR", "the sorted files would be sorted again")

A reader (or a process killed mid-write and started again) sees the old file or the new one, never half of one;
two processes writing the same path at once each write a whole file under a name of their own.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from catalens.errors import CatalensError

PROBLEMS_FILE = "problems.csv"  # the images a command could not read, with why: in a run directory, beside shards


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary name beside `path` (hidden, with this process's id) to write to; renamed to `path` when the block
    ends without an error, removed when it raises."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_atomic(path: str | Path, data: bytes | str) -> None:
    """`path`'s new content, all of it or none (text as UTF-8)."""
    with atomic_path(path) as temporary:
        if isinstance(data, str):
            temporary.write_text(data, encoding="utf-8")
        else:
            temporary.write_bytes(data)


def check_outside(output: str | Path, inputs: str | Path | list, output_name: str, input_name: str,
                  why: str) -> None:
    """A one-line error when `output` is one of `inputs` or lies inside one (symbolic links resolved)."""
    target = Path(output).resolve()
    for source in inputs if isinstance(inputs, list) else [inputs]:
        root = Path(source).resolve()
        if target == root or root in target.parents:
            raise CatalensError(f"{output_name} {output} is {'' if target == root else 'inside '}{input_name} "
                                f"{source}: give a folder outside it, or {why}")
