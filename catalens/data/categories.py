"""A 3-level category tree (CDiscount's `category_names.csv`: category_id, category_level1, _level2, _level3).

Training targets one level. At level 3 a class is the leaf `category_id` itself (unique, and what a submission
needs); at levels 1 and 2 a class is the level's name, with its parent added in parentheses when the same
name sits under two parents. Every class keeps the names of the levels above it (its `hierarchy`) for reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from catalens.errors import CatalensError

COLUMNS = ["category_id", "category_level1", "category_level2", "category_level3"]
DEFAULT_FILE = "category_names.csv"  # looked for beside a BSON file when --categories is not given


@dataclass
class CategoryTree:
    table: pd.DataFrame  # indexed by category_id (int64), columns level1, level2, level3
    path: str

    @classmethod
    def read(cls, path: str | Path) -> CategoryTree:
        path = Path(path).expanduser()
        if not path.is_file():
            raise CatalensError(f"category file {path} does not exist; give --categories category_names.csv")
        try:
            table = pd.read_csv(path, dtype={"category_id": "int64"}, keep_default_na=False)
        except (ValueError, pd.errors.ParserError) as error:
            raise CatalensError(f"cannot read category file {path}: {str(error).splitlines()[0]}") from error
        missing = [name for name in COLUMNS if name not in table.columns]
        if missing:
            raise CatalensError(f"category file {path} lacks column(s) {', '.join(missing)}; "
                                f"expected {', '.join(COLUMNS)}")
        if table["category_id"].duplicated().any():
            raise CatalensError(f"category file {path} lists category_id "
                                f"{table['category_id'][table['category_id'].duplicated()].iat[0]} twice")
        table = table.rename(columns={f"category_level{i}": f"level{i}" for i in (1, 2, 3)})
        return cls(table.set_index("category_id")[["level1", "level2", "level3"]], str(path))

    def class_names(self, level: int) -> pd.Series:
        """The class name of every leaf at `level` (index: category_id)."""
        if level not in (1, 2, 3):
            raise CatalensError(f"--level must be 1, 2 or 3, not {level}")
        if level == 3:
            return pd.Series(self.table.index.astype(str), index=self.table.index)
        names = self.table[f"level{level}"]
        if level == 2:
            parents = self.table.groupby("level2")["level1"].nunique()
            shared = names.map(parents) > 1
            names = names.where(~shared, names + " (" + self.table["level1"] + ")")
        return names

    def labels_for(self, category_ids: np.ndarray, level: int) -> np.ndarray:
        """Class names for an array of leaf ids ('' for ids not in the tree)."""
        names = self.class_names(level)
        return pd.Series(category_ids).map(names).fillna("").to_numpy(dtype=object)

    def hierarchy(self, level: int, classes=None) -> dict[str, dict]:
        """class -> {level1, level2[, level3, category_id]}: the names above (and at) each class (of `classes`,
        or all)."""
        names = self.class_names(level)
        if classes is not None:
            names = names[names.isin(list(classes))]
        result: dict[str, dict] = {}
        for category_id, name in names.items():
            if name in result:
                continue
            row = self.table.loc[category_id]
            entry = {f"level{i}": row[f"level{i}"] for i in range(1, level + 1)}
            if level == 3:
                entry["category_id"] = int(category_id)
            result[name] = entry
        return result


def find_categories(bson_path: Path, given: str | None) -> CategoryTree | None:
    """The tree from --categories, else category_names.csv beside the BSON file, else None."""
    if given:
        return CategoryTree.read(given)
    beside = bson_path.with_name(DEFAULT_FILE)
    return CategoryTree.read(beside) if beside.is_file() else None
