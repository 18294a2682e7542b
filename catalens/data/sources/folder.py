"""Image folders: one subfolder per class (searched recursively), optionally pre-split.

    shop/                      shop/
      dress/a.jpg                train/dress/a.jpg
      shoes/summer/b.png         val/dress/c.jpg      (or validation/)
                                 test/dress/d.jpg     (optional)
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from catalens.data.catalog import ZERO_BYTE, Catalog
from catalens.data.images import check_image, is_image_file, load_image
from catalens.data.targets import column, parse_names
from catalens.errors import CatalensError
from catalens.progress import progress

SPLIT_FOLDERS = {"train": "train", "val": "val", "validation": "val", "valid": "val", "test": "test"}


class FileReader:
    """Reads images by path relative to a root folder."""

    def __init__(self, root: Path | str):
        self.root = Path(root)

    def path(self, ref: str) -> Path:
        return self.root / ref

    def read(self, ref) -> Image.Image:
        return load_image(self.root / ref)

    def check(self, ref) -> str | None:
        """None if the image decodes, else why not."""
        return check_image(self.root / ref)


class ImageRoot:
    """Resolves image paths (relative to a root, or absolute) to real paths, refusing any that lead outside the
    root, by `../` or by a symbolic link. Directories are resolved once and cached: fast for 100,000s of files."""

    def __init__(self, root: Path | str):
        self.given = str(root)
        self.real = os.path.realpath(root)
        self._directories: dict[str, str] = {}

    def resolve(self, name: str) -> str | None:
        """The real path of `name` if it lies inside the root, else None."""
        path = os.path.join(self.given, name)
        directory, base = os.path.split(path)
        if base in ("", ".", ".."):
            real = os.path.realpath(path)
        else:
            real_directory = self._directories.get(directory)
            if real_directory is None:
                real_directory = self._directories[directory] = os.path.realpath(directory)
            real = os.path.join(real_directory, base)
            if os.path.islink(real):
                real = os.path.realpath(real)
        return real if real == self.real or real.startswith(self.real + os.sep) else None


def walk_files(folder: Path) -> list[Path]:
    """Every non-hidden file under `folder`, sorted, without loading anything."""
    found = []
    stack = [folder]
    while stack:
        current = stack.pop()
        with os.scandir(current) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                if entry.is_dir(follow_symlinks=True):
                    stack.append(Path(entry.path))
                elif entry.is_file(follow_symlinks=True):
                    found.append(Path(entry.path))
    return sorted(found)


@dataclass
class Levels:
    names: list[str]  # of the class-folder levels, top first
    targets: list[str]  # the levels asked for (--targets); [] for the usual one class folder
    depth: int


def folder_levels(options, layout) -> Levels:
    """--targets on a folder: the levels of its class folders (the depth of its deepest image), named level1, ...
    or by --level-names; a target that names no level is refused with the names there are."""
    if options is None or not options.targets:
        return Levels([], [], 0)
    depth = max((len(path.relative_to(base).parts) - 1 for base, _ in layout for path in walk_files(base)
                 if is_image_file(path)), default=0)
    names = parse_names(options.level_names, "--level-names") if options.level_names else \
        [f"level{i}" for i in range(1, depth + 1)]
    if len(names) != depth:
        raise CatalensError(f"--level-names gives {len(names)} name(s), but the class folders are {depth} deep")
    targets = parse_names(options.targets)
    unknown = [name for name in targets if name not in names]
    if unknown:
        raise CatalensError(f"--targets {','.join(targets)}: the folder's class levels are {', '.join(names)} (top "
                            "first; name them with --level-names)")
    return Levels(names, targets, depth)


def subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def open_folder(path: str | Path, verify: bool = False, options=None) -> Catalog:
    """Build a Catalog from a class-per-subfolder tree. `verify=True` decodes every image to find bad ones. With
    `--targets level1,level2` (or the names of `--level-names`) the class folders are levels of a tree nested to
    one depth (train/Fruit/Apple/Golden/1.jpg): each target is one level, the first is the label."""
    root = Path(path).expanduser()
    if not root.exists():
        raise CatalensError(f"data folder {root} does not exist; give a folder with one subfolder per class")
    if not root.is_dir():
        raise CatalensError(f"{root} is not a folder; give a folder with one subfolder per class")

    top = subfolders(root)
    split_dirs = {d: SPLIT_FOLDERS[d.name.lower()] for d in top if d.name.lower() in SPLIT_FOLDERS}
    layout = [(d, split) for d, split in split_dirs.items()] if split_dirs else [(root, "")]

    records = {"item_id": [], "ref": [], "label": [], "split": []}
    problems, skipped = [], []
    classes: list[str] = []
    levels = folder_levels(options, layout)
    for name in levels.targets:
        records[column(name)] = []
    for base, split in layout:
        for path in walk_files(base):
            relative = path.relative_to(root)
            parts = path.relative_to(base).parts
            if len(parts) < 2:
                problems.append({"ref": relative.as_posix(), "reason": "not inside a class folder"})
                continue
            if not is_image_file(path):
                skipped.append(relative.as_posix())
                continue
            if path.stat().st_size == 0:
                problems.append({"ref": relative.as_posix(), "reason": ZERO_BYTE})
                continue
            if levels.targets and len(parts) - 1 != levels.depth:
                problems.append({"ref": relative.as_posix(), "reason": f"not {levels.depth} class folders deep "
                                 f"({'/'.join(levels.names)})"})
                continue
            for name in levels.targets:
                records[column(name)].append(parts[levels.names.index(name)])
            label = parts[levels.names.index(levels.targets[0])] if levels.targets else parts[0]
            if label not in classes:
                classes.append(label)
            records["item_id"].append(relative.with_suffix("").as_posix())
            records["ref"].append(relative.as_posix())
            records["label"].append(label)
            records["split"].append(split)

    if not records["ref"]:
        hint = "" if top else " (it has no subfolders)"
        raise CatalensError(
            f"no images found in {root}{hint}; expected one subfolder per class, e.g. {root}/shoes/1.jpg"
        )
    notes = []
    if split_dirs:
        notes.append("pre-split folder: " + ", ".join(sorted(d.name for d in split_dirs)))
    if skipped:
        notes.append(f"{len(skipped)} files without an image extension ignored, e.g. {skipped[0]}")
    catalog = Catalog.from_records(
        records, classes=sorted(classes), reader=FileReader(root), source=str(root), problems=problems,
        notes=notes,
    )
    if verify:
        catalog = drop_unreadable(catalog)
    return catalog


def drop_unreadable(catalog: Catalog, workers: int | None = None) -> Catalog:
    """Decode every image (reduced-size JPEG decoding, in threads); report and drop those that fail."""
    refs = catalog.table["ref"].tolist()
    workers = workers or min(8, (os.cpu_count() or 1) * 2)
    with ThreadPoolExecutor(workers) as pool:
        reasons = list(progress(pool.map(catalog.reader.check, refs), total=len(refs),
                                description="checking images"))
    bad = [i for i, reason in enumerate(reasons) if reason]
    if not bad:
        return catalog
    problems = catalog.problems + [
        {"ref": catalog.table["ref"].iat[i], "reason": reasons[i]} for i in bad
    ]
    keep = [i for i, reason in enumerate(reasons) if not reason]
    result = catalog.subset(keep)
    result.problems = problems
    return result


def folder_name(label: str) -> str:
    """A class name as a folder name: path separators replaced, never empty, `.` or `..`."""
    name = label.replace("/", "-").replace("\\", "-").strip()
    return name if name not in ("", ".", "..") else "_"
