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
        parents[lower] = {value: next(iter(ups)) for value, ups in found.items()}
    return parents


def detect_tree(names: list[str], values: dict[str, np.ndarray]) -> list[str]:
    """The longest chain of targets (top first) in which every value of each level has exactly one parent in the
    level above, which has fewer values; [] when no two targets form a tree."""
    distinct = {name: len(set(map(str, values[name][present(values[name])]))) for name in names}
    above: dict[str, str] = {}  # a target -> the nearest coarser target its values determine
    for lower in names:
        candidates = [upper for upper in names if upper != lower and 1 < distinct[upper] < distinct[lower]
                      and all(len(ups) == 1 for ups in parents_of(values[lower], values[upper]).values())]
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
