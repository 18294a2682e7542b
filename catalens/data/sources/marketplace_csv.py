"""`csv:FILE`: a marketplace export (Shopee's format: posting_id, image, image_phash, title, label_group) with the
images in a folder (`--images DIR`, default `train_images/` beside the CSV).

`--top-groups N` keeps the N largest label groups; `--dedupe` then removes exact duplicates (the same file or
identical bytes) and near duplicates (perceptual hashes within `--max-distance` bits: the CSV's image_phash when
present, computed otherwise), one kept per cluster. `--columns image=file,label_group=category` maps other
marketplaces' column names; `--label-column NAME` takes labels from another column. A `split` column (train,
val, test on every row) is used as given; `--targets a,b,c` carries one column per target (data/targets.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from catalens.data.catalog import Catalog
from catalens.data.dedupe import find_duplicates
from catalens.data.identity import compute_phashes, parse_hash
from catalens.data.options import DataOptions
from catalens.data.sources.folder import FileReader, ImageRoot
from catalens.data.targets import TAGS_COLUMN, column, label_column_of, parse_names, read_tags
from catalens.errors import CatalensError
from catalens.progress import warn

ID_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")  # an image column holding ids finds ID.jpg (Fashion Product's)
DEFAULT_COLUMNS = {"posting_id": "posting_id", "image": "image", "image_phash": "image_phash", "title": "title",
                   "label_group": "label_group", "description": "description"}


def parse_columns(text: str | dict | None, defaults: dict[str, str]) -> dict[str, str]:
    """`key=name,key=name` (or a dict) over the defaults; unknown keys are refused."""
    columns = dict(defaults)
    if not text:
        return columns
    pairs = text.items() if isinstance(text, dict) else (item.split("=", 1) for item in str(text).split(",") if item)
    for pair in pairs:
        if len(pair) != 2 or not pair[0].strip() or not pair[1].strip():
            raise CatalensError(f"--columns takes key=name pairs separated by commas, e.g. image=file; got {text!r}")
        key, name = pair[0].strip(), pair[1].strip()
        if key not in defaults:
            raise CatalensError(f"unknown column key {key!r} in --columns; keys: {', '.join(defaults)}")
        columns[key] = name
    return columns


def read_table(path: Path) -> tuple[pd.DataFrame, list[dict]]:
    """The CSV as strings; malformed rows (wrong number of fields) are reported, not fatal."""
    if not path.is_file():
        raise CatalensError(f"CSV file {path} does not exist")
    bad: list[dict] = []

    def on_bad_line(fields):
        bad.append({"ref": f"{path.name}: {','.join(fields)[:80]}",
                    "reason": f"malformed row ({len(fields)} fields); skipped"})
        return None

    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, engine="python", on_bad_lines=on_bad_line)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as error:
        raise CatalensError(f"cannot read CSV {path}: {str(error).splitlines()[0] if str(error) else 'empty'}") \
            from error
    return table, bad


def open_csv(rest: str, verify: bool = False, options=None) -> Catalog:

    options = options or DataOptions()
    if not rest:
        raise CatalensError("give the CSV file after the prefix, e.g. csv:train.csv")
    path = Path(rest).expanduser()
    table, problems = read_table(path)
    columns = parse_columns(options.columns, DEFAULT_COLUMNS)
    targets = named_columns(options.targets, "--targets", table, path)
    label_column = label_column_of(options.label_column, targets) or columns["label_group"]
    required = {columns["image"]: "image", label_column: "label"}
    missing = [name for name in required if name not in table.columns]
    if missing:
        raise CatalensError(f"{path.name} lacks column(s) {', '.join(missing)}; it has: "
                            f"{', '.join(table.columns)}. Map yours with --columns image=NAME,label_group=NAME "
                            "(or --label-column NAME)")
    group_column = options.group_by if options.group_by not in (None, "photo") else None
    if group_column and group_column not in table.columns:
        raise CatalensError(f"--group-by {group_column}: {path.name} has no such column (it has: "
                            f"{', '.join(map(str, table.columns))})")
    if group_column and group_column == label_column:
        raise CatalensError(f"--group-by {group_column} is the label column: every class would be one group and "
                            "land in one split; group by a product or item column")
    images = Path(options.images).expanduser() if options.images else path.parent / "train_images"
    if not images.is_dir():
        raise CatalensError(f"image folder {images} does not exist; give --images DIR")
    ids = table[columns["posting_id"]] if columns["posting_id"] in table.columns else \
        pd.Series([str(i) for i in range(len(table))])
    titles, descriptions = (table[columns[key]] if columns[key] in table.columns else pd.Series([""] * len(table))
                            for key in ("title", "description"))
    frame = pd.DataFrame({"item_id": ids.to_numpy(), "image": table[columns["image"]].to_numpy(),
                          "label": table[label_column].to_numpy(), "title": titles.to_numpy(),
                          "description": descriptions.to_numpy(),
                          "phash": table[columns["image_phash"]].to_numpy() if columns["image_phash"] in table.columns
                          else [""] * len(table),
                          "group": table[group_column].where(table[group_column].notna() & (
                              table[group_column].astype(str) != ""), ids).astype(str).to_numpy()
                          if group_column else ids.to_numpy()})
    add_row_columns(frame, table, options, targets, path)
    frame = usable_rows(frame, images, problems)
    notes = []
    if options.top_groups:
        counts = frame["label"].value_counts()
        ranked = sorted(counts.index, key=lambda name: (-counts[name], name))[: options.top_groups]
        kept = int(frame["label"].isin(ranked).sum())
        notes.append(f"kept the {len(ranked)} largest of {len(counts)} label groups ({kept} images)")
        frame = frame[frame["label"].isin(ranked)].reset_index(drop=True)
    report = {}
    if options.dedupe:
        frame, report = remove_duplicates(frame, options.max_distance, problems)
        notes.append(f"duplicates removed: {report['removed_exact']} exact, {report['removed_near']} near "
                     f"(phash distance <= {options.max_distance}), in {len(report['clusters'])} clusters")
    if frame.empty:
        raise CatalensError(f"no usable rows in {path}; see the problems: "
                            + "; ".join(f"{p['ref']}: {p['reason']}" for p in problems[:3]))
    records = {"item_id": frame["item_id"].to_numpy(), "ref": frame["path"].to_numpy(),
               "label": frame["label"].to_numpy(), "title": frame["title"].to_numpy(),
               "description": frame["description"].to_numpy(), "split": frame["split"].to_numpy(),
               **{column(name): frame[column(name)].to_numpy() for name in targets},
               **({TAGS_COLUMN: frame[TAGS_COLUMN].to_numpy()} if options.tags else {})}
    if group_column:  # rows sharing this column's value split (and fold) together (an empty value: its own row)
        notes.append(f"images grouped by the {group_column} column for splits and cross-validation")
    catalog = Catalog.from_records(
        records,
        classes=sorted(frame["label"].unique()), reader=FileReader("/"), source=f"csv:{path}",
        problems=problems, notes=notes,
    )
    catalog.report = dict(report, columns=list(table.columns))
    if group_column:
        catalog.table["group"] = frame["group"].to_numpy()  # splits.py groups by it
    if verify:
        from catalens.data.sources.folder import drop_unreadable

        catalog = drop_unreadable(catalog)
    return catalog


def add_row_columns(frame: pd.DataFrame, table: pd.DataFrame, options, targets: list[str], path: Path) -> None:
    """What rides along with each row: its split when the file gives one, each target's value (--targets), its
    tags, |-joined (--tags)."""
    frame["split"] = given_splits(table, path)
    for name in targets:
        frame[column(name)] = table[name].where(table[name].notna(), "").astype(str).str.strip().to_numpy()
    if options.tags:
        tag_names = named_columns(options.tags, "--tags", table, path)
        frame[TAGS_COLUMN], tag_warnings = read_tags(table, tag_names, path.name)
        for message in tag_warnings:
            warn(message)


def given_splits(table: pd.DataFrame, path: Path) -> np.ndarray:
    """A `split` column (train, val, test) when the file has one, so several runs share one split; else ""."""
    if "split" not in table.columns:
        return np.full(len(table), "", object)
    values = table["split"].where(table["split"].notna(), "").astype(str).str.strip().str.lower()
    wrong = sorted(set(values) - {"train", "val", "test"})
    if wrong:
        raise CatalensError(f"{path.name}'s split column holds {', '.join(map(repr, wrong[:5]))}; use train, val "
                            "or test on every row (or drop the column to let catalens split)")
    return values.to_numpy(object)


def named_columns(spec: str | None, option: str, table: pd.DataFrame, path: Path) -> list[str]:
    """--targets or --tags: the columns named, each checked to exist (one line listing those that do)."""
    if not spec:
        return []
    names = parse_names(spec, option)
    absent = [name for name in names if name not in table.columns]
    if absent:
        raise CatalensError(f"{option}: {path.name} has no column {', '.join(map(repr, absent))}; its columns are: "
                            f"{', '.join(map(str, table.columns))}")
    return names


def usable_rows(frame: pd.DataFrame, images: Path, problems: list[dict]) -> pd.DataFrame:
    """The rows with an image and a label whose file exists inside the image folder, with its real `path`; each
    other row is added to `problems` with why."""
    usable = np.ones(len(frame), bool)
    guard = ImageRoot(images)
    real_paths = []
    for i, row in enumerate(frame.itertuples()):
        reason, real = None, guard.resolve(row.image) if row.image else None
        if real is not None and not os.path.isfile(real) and not os.path.splitext(row.image)[1]:
            real = next((found for found in (guard.resolve(row.image + suffix) for suffix in ID_SUFFIXES)
                         if found and os.path.isfile(found)), real)
        if not row.image or not row.label:
            reason = "empty image or label"
        elif real is None:
            reason = "image path leaves the image folder; skipped"
        elif not os.path.isfile(real):
            reason = "image file not found"
        if reason:
            problems.append({"ref": f"{row.item_id} ({row.image})", "reason": reason})
            usable[i] = False
        real_paths.append(real)
    frame["path"] = real_paths
    return frame[usable].reset_index(drop=True)


def remove_duplicates(frame: pd.DataFrame, max_distance: int, problems: list[dict]) -> tuple[pd.DataFrame, dict]:
    """Exact and near duplicates removed (one kept per cluster); a malformed image_phash is recomputed and
    reported in `problems`."""
    paths = [Path(path) for path in frame["path"]]
    parsed = [parse_hash(text) if text else None for text in frame["phash"]]
    for item, text, value in zip(frame["item_id"], frame["phash"], parsed):
        if text and value is None:
            problems.append({"ref": str(item), "reason": f"image_phash {text!r} is not a 64-bit hex hash; "
                             "computed from the image instead"})
    hashes = np.array([value or 0 for value in parsed], dtype=np.uint64)
    have = np.array([value is not None for value in parsed], dtype=bool)
    if (~have).any():
        computed = compute_phashes([path for path, ok in zip(paths, have) if not ok])
        hashes[~have] = [value or 0 for value in computed]
        have[~have] = [value is not None for value in computed]
    duplicates = find_duplicates(paths, hashes, max_distance, valid=have)
    ids = frame["item_id"].to_numpy()
    report = {"removed_exact": duplicates.exact, "removed_near": duplicates.near,
              "clusters": [[str(ids[row]) for row in members] for members in duplicates.clusters]}
    return frame[duplicates.keep].reset_index(drop=True), report
