"""Shared helpers for benchmarks: machine description, timed CLI runs, recording rows in BENCHMARKS.md."""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CATALENS_SHARED_DATA", REPO.parent / "shared" / "data"))
FASHION = f"fashion-mnist:{SHARED / 'fashion-mnist'}"


def machine() -> str:
    cpu = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    return f"{os.cpu_count()} cores, {cpu}, torch {torch.__version__}"


def catalens(*args: str) -> float:
    """Run the catalens CLI, streaming its output; returns wall seconds. Fails loudly."""
    executable = Path(sys.executable).parent / "catalens"
    started = time.perf_counter()
    subprocess.run([str(executable), *args], check=True, env={**os.environ, "CATALENS_NO_PROGRESS": "1"})
    return time.perf_counter() - started


def publish(rows: list[str], record_them: bool) -> None:
    """Print the result rows, and append them to BENCHMARKS.md when asked (--record)."""
    for row in rows:
        print(row)
    if record_them:
        record(rows)


def record(rows: list[str]) -> None:
    """Append result rows (markdown table rows without the date/machine/command) to BENCHMARKS.md, with the
    command that ran this script."""
    command = f"python bench/{Path(sys.argv[0]).name} {shlex.join(sys.argv[1:])}".strip()
    path = REPO / "BENCHMARKS.md"
    today = date.today().isoformat()
    with path.open("a") as handle:
        for row in rows:
            handle.write(f"| {today} | {machine()} | `{command}` | {row} |\n")
    print(f"recorded {len(rows)} row(s) in {path}")
