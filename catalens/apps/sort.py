"""`catalens sort`: put every image of a folder into one folder per predicted class.

    OUTPUT_DIR/
      zoomed/  normal/           one folder per class (names never collide: `a.jpg`, then `a_1.jpg`, ...)
      uncertain/                 top probability under --threshold (or --min-confidence)
      Apparel/Topwear/           a --targets run with a category tree under --min-confidence: the deepest sure
                                 level, as nested folders (Apparel/Topwear/Tshirts/ when the leaf is sure)
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
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from catalens.data.images import is_image_file
from catalens.data.sources.folder import folder_name, walk_files
from catalens.errors import CatalensError
from catalens.files import check_outside
from catalens.inference.predict import catalog_of_files
from catalens.loading.batches import each_batch, make_batches
from catalens.models.calibration import answered
from catalens.progress import warn
from catalens.rundir.run import Model, top_k
from catalens.support.placement import Ledger, destination_for, place, settle

MODES = ("copy", "move", "hardlink", "symlink")
MANIFEST, JOURNAL = "manifest.csv", ".catalens-sort-journal"
MANIFEST_COLUMNS = ["source", "destination", "label", "probability", "top_k", "error"]
UNCERTAIN, UNREADABLE = "uncertain", "unreadable"


@dataclass
class SortSummary:
    placed: Counter = field(default_factory=Counter)  # folder -> files placed this run
    resumed: int = 0  # files finished by an earlier run
    completed_from_journal: int = 0  # files an interrupted run had planned, finished now
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (source, reason)
    errors: list[tuple[str, str]] = field(default_factory=list)  # files that could not be placed: retried next run
    not_images: int = 0  # files without an image extension, left alone
    predicted: int = 0
    uncertain: int = 0  # predicted now and under --threshold / --target-accuracy
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
    check_outside(output_dir, input_dir, "OUTPUT_DIR", "INPUT_DIR", "the sorted files would be sorted again")


def sort_folder(model: Model, input_dir: str | Path, output_dir: str | Path, mode: str = "copy",
                threshold: float | None = None, k: int = 3, dry_run: bool = False, batch_size: int = 64,
                workers: int | None = None, show_progress: bool = True,
                min_confidence: float | None = None) -> SortSummary:
    """Predict every image under `input_dir` and place it in `output_dir/<class>/` (see the module doc)."""
    if mode not in MODES:
        raise CatalensError(f"--mode must be one of {', '.join(MODES)}")
    if min_confidence is not None and not 0 < min_confidence <= 1:
        raise CatalensError(f"--min-confidence {min_confidence:g}: give a probability in (0, 1], e.g. 0.9")
    if min_confidence is not None and threshold is not None:
        raise CatalensError("give --min-confidence or --threshold (--target-accuracy), not both: both say when a "
                            "photo goes to uncertain/")
    threshold = model.answer_threshold(threshold)
    check_folders(Path(input_dir), Path(output_dir))
    # absolute, canonical paths in the manifest: a run resumed from another folder or with another spelling of
    # the same folders finds its rows
    input_dir, output_dir = Path(input_dir).resolve(), Path(output_dir).resolve()
    ledger = Ledger(output_dir, MANIFEST_COLUMNS, JOURNAL, dry_run, MANIFEST)
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
                              summary, show_progress, min_confidence)
        summary.seconds = time.perf_counter() - started
        complete = not summary.errors
    finally:
        ledger.close(complete)
    return summary


def batch_folders(model: Model, images, k: int, threshold: float | None,
                  min_confidence: float | None) -> list[tuple[list, str]]:
    """Each photo's top-k and its folder: its class, or uncertain/ when its probability is under --threshold (or
    --min-confidence); a --targets run with a category tree under --min-confidence: the deepest sure level, as
    nested folders (Apparel/Topwear/ when Topwear is sure and Tshirts is not)."""
    answers = None
    if min_confidence is not None and model.targets is not None and model.targets.heads:
        scaled, per_target = model.target_probabilities(images)
        probabilities = model.finish_probabilities(scaled)
        answers = model.targets.answers(per_target, min_confidence)
    else:
        probabilities = model.probabilities(images)
    cut = min_confidence if min_confidence is not None else threshold
    found = []
    for row, values in enumerate(probabilities):
        best = top_k(values, model.classes, k)
        if answers is not None:
            path = answers[row][0]
            folder = "/".join(folder_name(part) for part in path.split(" > ")) if path else UNCERTAIN
        else:
            folder = folder_name(best[0][0]) if cut is None or answered(best[0][1], cut) else UNCERTAIN
        found.append((best, folder))
    return found


def predict_and_place(model: Model, paths: list[Path], ledger: Ledger, output_dir: Path, mode: str,
                      threshold: float | None, k: int, dry_run: bool, batch_size: int, workers: int | None,
                      summary: SortSummary, show_progress: bool, min_confidence: float | None = None) -> None:
    catalog = catalog_of_files(paths, str(paths[0].parent))
    batches = make_batches(catalog, model.preprocessing, batch_size, workers=workers)

    def place_batch(rows: list[dict]) -> None:  # the journal first, then the files, then the manifest
        ledger.plan(rows)
        carry_out(rows, ledger, mode, summary, dry_run)
        ledger.sync()

    # one thread places a batch's files while the next batch is predicted (copies wait on the disk, not the CPU);
    # the ledger is only touched from that thread, and leaving the block waits for the batch in flight
    placing = None
    with ThreadPoolExecutor(1, thread_name_prefix="catalens-place") as placer:
        with closing(each_batch(batches, "sorting", len(paths), show_progress=show_progress)) as stream:
            for batch in stream:
                rows = []
                if len(batch.rows):
                    answers = batch_folders(model, batch.images, k, threshold, min_confidence)
                    for row_number, (best, folder) in zip(batch.rows.tolist(), answers):
                        label, probability = best[0]
                        summary.uncertain += folder == UNCERTAIN
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
                if placing is not None:
                    placing.result()  # the batch before: placed (or its error raised here)
                placing = placer.submit(place_batch, rows)
        if placing is not None:
            placing.result()


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
