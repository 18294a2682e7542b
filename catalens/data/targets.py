"""The values of several targets per item (`--targets`), and the category trees they form: read by the sources
(a catalog's `target:NAME` columns), checked and found here, fitted and used in models/targets.py."""

from __future__ import annotations

import numpy as np

from catalens.errors import CatalensError

COLUMN_PREFIX = "target:"  # a target's values in a catalog's table


def column(name: str) -> str:
    return COLUMN_PREFIX + name


def parse_names(spec, option: str = "--targets") -> list[str]:
    """`a,b,c` -> ["a", "b", "c"]; repeated or empty names are refused in one line."""
    names = [part.strip() for part in str(spec or "").split(",") if part.strip()]
    if not names or len(set(names)) != len(names):
        raise CatalensError(f"{option} takes distinct column names separated by commas, e.g. {option} "
                            f"articleType,baseColour; got {spec!r}")
    return names


def label_column_of(label_column: str | None, targets: list[str]) -> str | None:
    """A source's label column under --targets: the first target (--label-column, when also given, must be it)."""
    if targets and label_column and label_column != targets[0]:
        raise CatalensError(f"--label-column {label_column} and --targets {','.join(targets)}: the first target is "
                            "the label; leave out --label-column or put it first in --targets")
    return label_column or (targets[0] if targets else None)


def present(values) -> np.ndarray:
    """Which of a target column's values are given (not empty, not NaN)."""
    series = np.asarray(values, dtype=object)
    return np.array([value is not None and value == value and str(value).strip() != "" for value in series], bool)


def parents_of(child: np.ndarray, parent: np.ndarray) -> dict[str, set[str]]:
    """Each child value -> the set of parent values it appears with (rows where both are given)."""
    found: dict[str, set[str]] = {}
    both = present(child) & present(parent)
    for c, p in zip(child[both], parent[both]):
        found.setdefault(str(c), set()).add(str(p))
    return found


def is_parent(child: np.ndarray, parent: np.ndarray) -> bool:
    """Every child value has exactly one parent value, in every row that has it (none without one)."""
    found = parents_of(child, parent)
    given = present(child)
    return all(len(ups) == 1 for ups in found.values()) and set(map(str, child[given])) == set(found) \
        and present(parent)[given].all()


def check_tree(levels: list[str], values: dict[str, np.ndarray]) -> dict[str, dict[str, str]]:
    """A declared tree (top level first): each level's value -> its parent's value; one line naming the first
    value with two parents."""
    parents = {}
    for upper, lower in zip(levels, levels[1:]):
        found = parents_of(values[lower], values[upper])
        for value, ups in sorted(found.items()):
            if len(ups) > 1:
                first, second = sorted(ups)[:2]
                raise CatalensError(f"--tree {','.join(levels)}: {lower} {value!r} has two parents in {upper}: "
                                    f"{first!r} and {second!r}; fix the data or leave --tree out")
        orphans = sorted(set(map(str, values[lower][present(values[lower])])) - set(found))
        if orphans:
            raise CatalensError(f"--tree {','.join(levels)}: {lower} {', '.join(map(repr, orphans[:3]))} has no "
                                f"{upper} value in any row; fill it in or leave --tree out")
        parents[lower] = {value: next(iter(ups)) for value, ups in found.items()}
    return parents


def detect_tree(names: list[str], values: dict[str, np.ndarray]) -> list[str]:
    """The longest chain of targets (top first) in which every value of each level has exactly one parent in the
    level above, which has fewer values; [] when no two targets form a tree."""
    distinct = {name: len(set(map(str, values[name][present(values[name])]))) for name in names}
    above: dict[str, str] = {}  # a target -> the nearest coarser target its values determine
    for lower in names:
        candidates = [upper for upper in names if upper != lower and 1 < distinct[upper] < distinct[lower]
                      and is_parent(values[lower], values[upper])]
        if candidates:
            above[lower] = max(candidates, key=lambda upper: (distinct[upper], -names.index(upper)))
    best: list[str] = []
    for leaf in names:
        chain = [leaf]
        while chain[-1] in above and above[chain[-1]] not in chain:
            chain.append(above[chain[-1]])
        if len(chain) > len(best):
            best = chain
    return best[::-1] if len(best) >= 2 else []


TAGS_COLUMN = "tags"  # a catalog's tags per row (--tags), joined by TAG_SEPARATOR; "" when it has none
TAG_SEPARATOR = "|"
FLAGS = {"0", "1", "true", "false", "yes", "no", ""}  # the values of a 0/1 tag column


def read_tags(table, names: list[str], where: str) -> tuple[list[str], list[str]]:
    """(each row's tags joined by |, warnings): one column of |-separated tags, or 0/1 columns (a tag each, named
    after its column; a single column whose values are all 0/1 is one such tag)."""
    warnings = []
    single = table[names[0]].where(table[names[0]].notna(), "").astype(str) if len(names) == 1 else None
    if single is not None and not set(single.str.strip().str.lower()) <= FLAGS:  # one column of |-separated tags
        other = single.str.contains(r"[,;]")
        if other.any() and not single.str.contains(r"\|", regex=True).any():
            raise CatalensError(f"--tags {names[0]}: its values hold ',' or ';' but never '|' (e.g. "
                                f"{single[other].iloc[0]!r}); separate tags with |, or give 0/1 columns")
        if other.any():
            warnings.append(f"--tags {names[0]}: {int(other.sum()):,} value(s) hold ',' or ';' (e.g. "
                            f"{single[other].iloc[0]!r}); tags are separated by |, so these are read as part of a tag")
        rows = [sorted({part.strip() for part in value.split(TAG_SEPARATOR) if part.strip()}) for value in single]
    else:
        flags = {}
        for name in names:
            column = table[name].where(table[name].notna(), "").astype(str).str.strip().str.lower()
            wrong = sorted(set(column) - FLAGS)
            if wrong:
                raise CatalensError(f"--tags {','.join(names)}: the column {name!r} of {where} holds "
                                    f"{', '.join(map(repr, wrong[:3]))}; several tag columns take 0 or 1 (one column "
                                    "of |-separated tags: --tags COLUMN)")
            flags[name] = column.isin(["1", "true", "yes"]).to_numpy()
        rows = [[name for name in names if flags[name][i]] for i in range(len(table))]
    empty = sum(1 for row in rows if not row)
    if empty:
        warnings.append(f"--tags: {empty:,} row(s) of {where} have no tag (trained as having none of them)")
    return [TAG_SEPARATOR.join(row) for row in rows], warnings


def tag_matrix(values, names: list[str]) -> np.ndarray:
    """(rows, tags) 0/1 of |-joined tags over `names`."""
    index = {name: i for i, name in enumerate(names)}
    matrix = np.zeros((len(values), len(names)), np.float32)
    for row, value in enumerate(values):
        for tag in str(value or "").split(TAG_SEPARATOR):
            if tag in index:
                matrix[row, index[tag]] = 1.0
    return matrix
