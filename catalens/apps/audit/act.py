"""Acting on an audit, as safely as `sort`: `--apply DIR` copies (or moves) each suspect into DIR/KIND/LABEL/
through the same journal and manifest (placement.py), so a run killed at any moment is finished by running it
again; `--write-catalog FILE --remove MARKED.csv` writes the catalog without the items a person marked. Labels
are never changed: a suggested label is only ever shown."""

from __future__ import annotations

import csv
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from catalens.data.catalog import Catalog
from catalens.data.identity import image_bytes
from catalens.data.sources.folder import folder_name
from catalens.errors import CatalensError
from catalens.files import check_outside
from catalens.progress import make_progress, warn
from catalens.support.placement import PARTIAL_SUFFIX, Ledger, destination_for, place, settle

PRIORITY = ("broken", "label", "leak", "duplicate", "outlier")  # an item found twice goes where it matters most
MANIFEST_COLUMNS = ["source", "destination", "item", "kind", "error"]
JOURNAL = ".catalens-audit-journal"
BATCH = 64  # suspects planned (one fsync) before any of them is placed


@dataclass
class ApplySummary:
    placed: Counter = field(default_factory=Counter)
    errors: list[tuple[str, str]] = field(default_factory=list)
    manifest: Path | None = None


def read_issues(path: Path) -> list[dict]:
    if not path.is_file():
        raise CatalensError(f"{path} not found: run `catalens audit DATA --out {path.parent}` first")
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def file_root(catalog: Catalog) -> Path | None:
    root = getattr(catalog.reader, "root", None)
    return Path(root).resolve() if root is not None and hasattr(catalog.reader, "path") else None


def apply_findings(catalog: Catalog, issues: list[dict], target: str | Path, mode: str = "copy",
                   kinds: tuple[str, ...] = PRIORITY) -> ApplySummary:
    target = Path(target)
    if mode not in ("copy", "move"):
        raise CatalensError(f"--mode {mode}: audit --apply copies or moves (copy is the default)")
    root = file_root(catalog)
    if root is not None:
        check_outside(target, root, "--apply", "the data", "the review folders would become part of the catalog")
    if mode == "move" and root is None:
        raise CatalensError(f"--mode move needs image files; the images of {catalog.source} are not files "
                            "(use --mode copy)")
    chosen: dict[str, dict] = {}
    for issue in issues:
        if issue["kind"] in kinds:
            current = chosen.get(issue["item"])
            if current is None or PRIORITY.index(issue["kind"]) < PRIORITY.index(current["kind"]):
                chosen[issue["item"]] = issue
    ref_of = {str(ref): ref for ref in catalog.table["ref"]}
    if root is not None:  # the files the listing left out (zero-byte) are listed as broken: review them too
        ref_of.update({str(problem["ref"]): str(problem["ref"]) for problem in catalog.left_out_files()})
    ledger = Ledger(target, MANIFEST_COLUMNS, JOURNAL)
    summary = ApplySummary(manifest=ledger.manifest_path)
    try:
        for row in ledger.unfinished():  # a run that was killed: finish what it planned
            state = settle(row, mode) if root is not None else ("done" if os.path.lexists(row["destination"])
                                                                 else "todo")
            if state == "todo":
                put(catalog, ref_of.get(row["item"], row["item"]), row, mode, root)
            if state != "vanished":
                ledger.finish(row)
        done = ledger.finished_items()
        todo = [(item, issue) for item, issue in chosen.items() if item not in done]
        with make_progress() as bar:
            task = bar.add_task("review folders", total=len(todo))
            for start in range(0, len(todo), BATCH):
                planned = []
                for item, issue in todo[start:start + BATCH]:
                    if item not in ref_of:
                        summary.errors.append((item, "not in this catalog (was the audit run on other data?)"))
                        continue
                    ref = ref_of[item]
                    source = str(root / str(ref)) if root is not None else f"{catalog.source}::{item}"
                    folder = f"{issue['kind']}/{folder_name(issue['given_label'] or 'unlabelled')}"
                    name = Path(str(ref)).name if root is not None else f"{folder_name(item)}.jpg"
                    destination = destination_for(target, folder, Path(name), ledger.reserved)
                    ledger.reserved.add(destination)
                    planned.append((ref, {"source": source, "destination": destination, "item": item,
                                          "kind": issue["kind"], "error": ""}))
                ledger.plan([row for _, row in planned])  # write-ahead: on disk before any file is touched
                for ref, row in planned:
                    try:
                        put(catalog, ref, row, mode, root)
                    except OSError as error:
                        summary.errors.append((row["item"], error.strerror or str(error)))
                        continue
                    ledger.finish(row)
                    summary.placed[row["kind"]] += 1
                ledger.sync()
                bar.advance(task, len(planned))
        ledger.sync()
    finally:
        ledger.close(complete=not summary.errors)
    if summary.errors:
        warn(f"{len(summary.errors)} suspect(s) could not be placed: " + "; ".join(
            f"{item}: {reason}" for item, reason in summary.errors[:5]))
    return summary


def put(catalog: Catalog, ref, row: dict, mode: str, root: Path | None) -> None:
    """Place one suspect: the file itself (copy or move), or, for images that are not files, their bytes."""
    destination = Path(row["destination"])
    if root is not None:
        place(Path(row["source"]), destination, mode)
        return
    data, _ = image_bytes(catalog, ref)
    destination.parent.mkdir(parents=True, exist_ok=True)
    temporary = destination.with_name(f".{destination.name}{PARTIAL_SUFFIX}")
    temporary.write_bytes(data)
    os.rename(temporary, destination)


def write_catalog(catalog: Catalog, remove_file: str | Path | None, out: str | Path) -> tuple[int, int]:
    """The catalog without the items listed (column `item`) in `remove_file`, as CSV (image, label, product_id,
    split, title, description); (rows written, rows removed)."""
    remove: set[str] = set()
    if remove_file:
        with open(remove_file, newline="") as handle:
            reader = csv.DictReader(handle)
            if "item" not in (reader.fieldnames or []):
                raise CatalensError(f"{remove_file} has no `item` column: give a CSV such as a copy of issues.csv "
                                    "that keeps only the rows to remove")
            remove = {row["item"] for row in reader}
    table = catalog.table
    keep = ~table["ref"].astype(str).isin(remove)
    unknown = len(remove - set(table["ref"].astype(str)))
    if unknown:
        warn(f"{unknown} item(s) of {remove_file} are not in this catalog and were ignored")
    table[keep].rename(columns={"ref": "image"})[["image", "label", "product_id", "split", "title",
                                                   "description"]].to_csv(out, index=False)
    return int(keep.sum()), int((~keep).sum())
