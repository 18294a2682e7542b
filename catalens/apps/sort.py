"""`catalens sort`: put every image of a folder into one folder per predicted class.

    OUTPUT_DIR/
      zoomed/  normal/           one folder per class (names never collide: `a.jpg`, then `a_1.jpg`, ...)
      uncertain/                 top probability under --threshold
      unreadable/                zero-byte, not an image, truncated (copy modes; move leaves them in place)
      manifest.csv               source, destination, label, probability, top_k, error: one row per finished file
      .catalens-sort-journal     the plan of each batch, written (and fsynced) before any file of it is touched

Safety: every batch is planned into the journal first; a file's manifest row is written after it is placed.
A run started again reads both: finished files are skipped, planned ones are checked on disk and completed,
so nothing is predicted twice, duplicated or lost. A move is `rename` on one filesystem (the file always has
exactly one name); across filesystems it is copy to a temporary name, fsync, rename, then delete the source.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from catalens.data.images import is_image_file
from catalens.data.sources.folder import folder_name, walk_files
from catalens.errors import CatalensError
from catalens.inference.predict import catalog_of_files
from catalens.loading.batches import make_batches
from catalens.progress import make_progress, warn
from catalens.rundir.run import Model, top_k

MODES = ("copy", "move", "hardlink", "symlink")
MANIFEST = "manifest.csv"
JOURNAL = ".catalens-sort-journal"
MANIFEST_COLUMNS = ["source", "destination", "label", "probability", "top_k", "error"]
UNCERTAIN, UNREADABLE = "uncertain", "unreadable"
PARTIAL_SUFFIX = ".catalens-partial"


@dataclass
class SortSummary:
    placed: Counter = field(default_factory=Counter)  # folder -> files placed this run
    resumed: int = 0  # files finished by an earlier run
    completed_from_journal: int = 0  # files an interrupted run had planned, finished now
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (source, reason)
    errors: list[tuple[str, str]] = field(default_factory=list)  # files that could not be placed: retried next run
    not_images: int = 0  # files without an image extension, left alone
    predicted: int = 0
    seconds: float = 0.0
    plan: list[dict] = field(default_factory=list)  # --dry-run: what would be done

    @property
    def images_per_s(self) -> float:
        return self.predicted / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict:
        return {"placed": dict(self.placed), "resumed": self.resumed, "completed_from_journal":
                self.completed_from_journal, "unreadable": len(self.unreadable), "errors": len(self.errors),
                "not_images": self.not_images, "predicted": self.predicted, "seconds": round(self.seconds, 3),
                "images_per_s": round(self.images_per_s, 1)}


def check_folders(input_dir: Path, output_dir: Path) -> None:
    if not input_dir.is_dir():
        raise CatalensError(f"input folder {input_dir} does not exist or is not a folder")
    source, target = input_dir.resolve(), output_dir.resolve()
    if target == source:
        raise CatalensError("OUTPUT_DIR is INPUT_DIR: give another folder (sorting in place would re-read its output)")
    if source in target.parents:
        raise CatalensError(f"OUTPUT_DIR {output_dir} is inside INPUT_DIR {input_dir}: give a folder outside it, "
                            "or the sorted files would be sorted again")


class Ledger:
    """The manifest (finished files) and the journal (planned files) of one output folder."""

    def __init__(self, output_dir: Path, dry_run: bool = False):
        self.output_dir = output_dir
        self.manifest_path, self.journal_path = output_dir / MANIFEST, output_dir / JOURNAL
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
            self._writer = csv.DictWriter(self._manifest, MANIFEST_COLUMNS)
            if new:
                self._writer.writeheader()

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


def sort_folder(model: Model, input_dir: str | Path, output_dir: str | Path, mode: str = "copy",
                threshold: float | None = None, k: int = 3, dry_run: bool = False, batch_size: int = 64,
                workers: int | None = None, show_progress: bool = True) -> SortSummary:
    """Predict every image under `input_dir` and place it in `output_dir/<class>/` (see the module doc)."""
    if mode not in MODES:
        raise CatalensError(f"--mode must be one of {', '.join(MODES)}")
    if threshold is not None and not 0 <= threshold <= 1:
        raise CatalensError("--threshold is a probability between 0 and 1")
    check_folders(Path(input_dir), Path(output_dir))
    # absolute, canonical paths in the manifest: a run resumed from another folder or with another spelling of
    # the same folders finds its rows
    input_dir, output_dir = Path(input_dir).resolve(), Path(output_dir).resolve()
    ledger = Ledger(output_dir, dry_run)
    summary = SortSummary(resumed=len(ledger.finished))
    complete = False
    try:
        for row in ledger.unfinished():
            state = "todo" if dry_run else settle(row, mode)
            if state == "done":
                ledger.finish(row)
                summary.completed_from_journal += 1
            elif state == "vanished":
                vanished(row, ledger, summary)
            else:
                carry_out([row], ledger, mode, summary, dry_run)
                summary.completed_from_journal += 1
        ledger.sync()
        files = walk_files(input_dir)
        images = [path for path in files if is_image_file(path)]
        summary.not_images = len(files) - len(images)
        todo = [path for path in images if str(path) not in ledger.finished and str(path) not in ledger.planned]
        started = time.perf_counter()
        if todo:
            predict_and_place(model, todo, ledger, output_dir, mode, threshold, k, dry_run, batch_size, workers,
                              summary, show_progress)
        summary.seconds = time.perf_counter() - started
        complete = not summary.errors
    finally:
        ledger.close(complete)
    return summary


def predict_and_place(model: Model, paths: list[Path], ledger: Ledger, output_dir: Path, mode: str,
                      threshold: float | None, k: int, dry_run: bool, batch_size: int, workers: int | None,
                      summary: SortSummary, show_progress: bool) -> None:
    catalog = catalog_of_files(paths, str(paths[0].parent))
    batches = make_batches(catalog, model.preprocessing, batch_size, workers=workers)
    with make_progress(disable=not show_progress) as bar:
        task = bar.add_task("sorting", total=len(paths))
        for batch in batches:
            rows = []
            if len(batch.rows):
                for row_number, probabilities in zip(batch.rows.tolist(), model.probabilities(batch.images)):
                    best = top_k(probabilities, model.classes, k)
                    label, probability = best[0]
                    folder = UNCERTAIN if threshold is not None and probability < threshold else folder_name(label)
                    source = paths[row_number]
                    rows.append({"source": str(source), "label": label, "probability": round(probability, 6),
                                 "top_k": ";".join(f"{name}:{p:.4f}" for name, p in best), "error": "",
                                 "destination": destination_for(output_dir, folder, source, ledger.reserved)})
                    ledger.reserved.add(rows[-1]["destination"])
                summary.predicted += len(batch.rows)
            for ref, reason in batch.failures:
                summary.unreadable.append((ref, reason))
                destination = "" if mode == "move" else destination_for(output_dir, UNREADABLE, Path(ref),
                                                                        ledger.reserved)
                ledger.reserved.add(destination)
                rows.append({"source": ref, "destination": destination, "label": "", "probability": "",
                             "top_k": "", "error": reason})
            ledger.plan(rows)
            carry_out(rows, ledger, mode, summary, dry_run)
            ledger.sync()
            bar.advance(task, len(rows))


def carry_out(rows: list[dict], ledger: Ledger, mode: str, summary: SortSummary, dry_run: bool) -> None:
    for row in rows:
        folder = Path(row["destination"]).parent.name if row["destination"] else ""
        if dry_run:
            summary.plan.append(row)
            summary.placed[folder or "left in place"] += 1
            continue
        if row["destination"]:
            try:
                place(Path(row["source"]), Path(row["destination"]), mode)
            except FileNotFoundError:
                vanished(row, ledger, summary)
                continue
            except OSError as error:
                if error.errno == errno.EXDEV:
                    raise CatalensError("--mode hardlink needs INPUT_DIR and OUTPUT_DIR on one filesystem; use "
                                        "--mode copy or symlink") from error
                if error.errno == errno.ENOSPC:
                    raise CatalensError(f"the disk holding {ledger.output_dir} is full; {len(ledger.finished)} "
                                        "files are placed and listed in the manifest: free some space and run "
                                        "the same command again to go on") from error
                summary.errors.append((row["source"], f"{error.strerror or error} ({row['destination']})"))
                continue
        ledger.finish(row)
        summary.placed[folder or "left in place"] += 1


def vanished(row: dict, ledger: Ledger, summary: SortSummary) -> None:
    """A file deleted or moved away by someone else before catalens placed it: listed, never retried."""
    reason = "file vanished before it was placed"
    summary.unreadable.append((row["source"], reason))
    ledger.finish({**row, "destination": "", "error": reason})


def write_errors(output_dir: Path, summary: SortSummary) -> Path | None:
    """The files that could not be placed, one per line with the reason (they are retried by the next run)."""
    if not summary.errors:
        return None
    path = output_dir / "errors.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["source", "error"])
        writer.writerows(summary.errors)
    warn(f"{len(summary.errors)} file(s) could not be placed (listed in {path}); run the command again to retry")
    return path
