"""Placing files safely, for every command that copies or moves a user's files (`sort`, `audit --apply`).

Every batch is planned into a journal first (fsynced); a file's manifest row is written after it is placed. A run
started again reads both: finished files are skipped, planned ones are checked on disk and completed, so nothing
is duplicated or lost by a kill -9. A move is `rename` on one filesystem (the file always has exactly one name);
across filesystems it is a copy to a temporary name, fsync, rename, then the source is deleted.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import shutil
from pathlib import Path

from catalens.errors import CatalensError

PARTIAL_SUFFIX = ".catalens-partial"


class Ledger:
    """The manifest (finished files, CSV with `columns`) and the journal (planned files, JSON lines) of one output
    folder. Rows are dicts with at least `source` and `destination`."""

    def __init__(self, output_dir: Path, columns: list[str], journal: str, dry_run: bool = False,
                 manifest: str = "manifest.csv"):
        self.output_dir = output_dir
        self.manifest_path, self.journal_path = output_dir / manifest, output_dir / journal
        self.dry_run = dry_run
        self.finished: dict[str, dict] = {row["source"]: row for row in read_rows(self.manifest_path, csv_rows)}
        self.planned: dict[str, dict] = {row["source"]: row for row in read_rows(self.journal_path, json_rows)}
        self.reserved = {row["destination"] for row in [*self.finished.values(), *self.planned.values()]}
        self._manifest = self._journal = None
        if not dry_run:
            try:
                output_dir.mkdir(parents=True, exist_ok=True)
                new = not self.manifest_path.exists()
                self._manifest = open(self.manifest_path, "a", newline="")
                self._journal = open(self.journal_path, "a")
            except OSError as error:
                raise CatalensError(f"cannot write to {output_dir} ({error.strerror}); check its permissions "
                                    "and free space") from error
            self._writer = csv.DictWriter(self._manifest, columns)
            if new:
                self._writer.writeheader()

    def finished_items(self) -> set[str]:
        """The `item` of every finished row (rows that name one)."""
        return {row.get("item", "") for row in self.finished.values()}

    def unfinished(self) -> list[dict]:
        return [row for source, row in self.planned.items() if source not in self.finished]

    def plan(self, rows: list[dict]) -> None:
        """Write-ahead: the batch's rows reach the disk before any of its files is touched."""
        for row in rows:
            self.planned[row["source"]] = row
            if row["destination"]:
                self.reserved.add(row["destination"])
        if self._journal:
            self._journal.write("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
            self._journal.flush()
            os.fsync(self._journal.fileno())

    def finish(self, row: dict) -> None:
        self.finished[row["source"]] = row
        if self._manifest:
            self._writer.writerow(row)

    def sync(self) -> None:
        if self._manifest:
            self._manifest.flush()
            os.fsync(self._manifest.fileno())

    def close(self, complete: bool) -> None:
        if not self._manifest:
            return
        self.sync()
        self._manifest.close()
        self._journal.close()
        if complete:  # every planned file is in the manifest: the journal has nothing left to say
            self.journal_path.unlink(missing_ok=True)


def read_rows(path: Path, parse) -> list[dict]:
    """Rows of a manifest or journal; a last line cut short by a kill is dropped (and cut from the file, so
    appending goes on after a whole line). Its file was never touched: rows reach the disk first."""
    if not path.exists():
        return []
    data = path.read_bytes()
    whole = data[: data.rfind(b"\n") + 1]
    if len(whole) != len(data):
        with open(path, "r+b") as handle:
            handle.truncate(len(whole))
    return list(parse(whole.decode("utf-8")))


def csv_rows(text: str):
    yield from csv.DictReader(text.splitlines())


def json_rows(text: str):
    for line in text.splitlines():
        if line.strip():
            yield json.loads(line)


def destination_for(output_dir: Path, folder: str, source: Path, reserved: set[str]) -> str:
    """OUTPUT_DIR/folder/name, with `_1`, `_2`, ... before the extension when the name is taken on disk or
    by another planned file: nothing is ever overwritten."""
    stem, suffix = source.stem, source.suffix
    candidate, n = output_dir / folder / source.name, 0
    while str(candidate) in reserved or os.path.lexists(candidate):
        n += 1
        candidate = output_dir / folder / f"{stem}_{n}{suffix}"
    return str(candidate)


def place(source: Path, destination: Path, mode: str) -> None:
    """Put the file at `destination`, which appears there whole or not at all."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    if os.path.lexists(destination):
        raise FileExistsError(errno.EEXIST, "destination exists", str(destination))
    if mode == "symlink":
        os.symlink(source.resolve(), destination)
    elif mode == "hardlink":
        os.link(source, destination)
    elif mode == "copy":
        copy_whole(source, destination, sync=False)
    else:
        try:
            os.rename(source, destination)  # one filesystem: atomic, the file always has exactly one name
        except OSError as error:
            if error.errno != errno.EXDEV:
                raise
            copy_whole(source, destination, sync=True)  # across filesystems: durable copy first,
            os.unlink(source)  # then the source goes


def copy_whole(source: Path, destination: Path, sync: bool) -> None:
    temporary = destination.with_name(f".{destination.name}{PARTIAL_SUFFIX}")
    try:
        shutil.copy2(source, temporary)
        if sync:
            with open(temporary, "rb+") as handle:
                os.fsync(handle.fileno())
        os.rename(temporary, destination)
    finally:
        if temporary.exists():
            temporary.unlink()


def settle(row: dict, mode: str) -> str:
    """Where a planned file stands after an interruption: 'done', 'todo' (place it again) or 'vanished'."""
    source, destination = Path(row["source"]), row["destination"]
    if not destination:  # an unreadable file left in place (move mode)
        return "done"
    there = os.path.lexists(destination)
    if mode == "move" and there and source.exists():
        # across filesystems the copy was complete (it appears only by rename) but the source not yet deleted
        if source.stat().st_size == Path(destination).stat().st_size and not source.samefile(destination):
            os.unlink(source)
    if there:
        return "done"
    return "todo" if source.exists() else "vanished"
