"""Several targets from one photo, and the category trees they form (issue 30).

`catalens train --targets articleType,baseColour,gender` reads one column per target (csv), or one class-folder
level per target (folders: level1, level2, ...; data/targets.py); the first is the run's own label (its network's
classifier, what sort and serve answer by default), and every target gets a linear head on the same frozen
backbone features: one backbone pass per photo, a head per target. A row whose value is missing
for one target trains the other heads and is left out of that one (counted).

When the values of some targets form a tree (every value of a finer target has one parent in a coarser one, such
as articleType -> subCategory -> masterCategory, found in the training rows, or declared with --tree), the run
stores it and predicts consistently: the finest level's head answers, and each parent's probability is the sum of
its children's. `answer` walks up the tree to the deepest level whose probability reaches --min-confidence
("Apparel > Topwear" when Topwear is sure and Tshirts is not).

The heads live in targets.json (names, classes, tree, temperatures) and targets.safetensors (weights): no pickle.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from catalens.errors import CatalensError

OWN = "own head: "  # a tree level's own head, beside the sums of its children
TAGS = "#tags"  # the tags' probabilities among a run's target probabilities
THRESHOLD_GRID = tuple(round(0.5 + 0.005 * i, 3) for i in range(100))  # 0.5 to 0.995: where threshold_for looks
ACCURACY_WANTED = (0.98, 0.99)  # the shares right for which training finds the tree's --min-confidence


@dataclass
class Head:
    classes: list[str]
    weight: np.ndarray  # (classes, features)
    bias: np.ndarray  # (classes,)
    temperature: float = 1.0
    info: dict = field(default_factory=dict)

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        logits = (features @ self.weight.T + self.bias) / self.temperature
        logits -= logits.max(1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(1, keepdims=True)


@dataclass
class TagHead:
    """--tags: a sigmoid per tag, and the probability from which each tag is given (chosen on validation, F1)."""
    names: list[str]
    weight: np.ndarray  # (tags, features)
    bias: np.ndarray  # (tags,)
    thresholds: np.ndarray  # (tags,)
    info: dict = field(default_factory=dict)

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-(features @ self.weight.T + self.bias)))

    def given(self, probabilities: np.ndarray) -> np.ndarray:
        return probabilities >= self.thresholds


@dataclass
class Targets:
    """The heads of a multi-target run, in the order given (the first is the run's own label), and its tree."""

    heads: dict[str, Head]
    tree: list[str] = field(default_factory=list)  # top level first; [] when the targets form none
    parents: dict[str, dict[str, str]] = field(default_factory=dict)  # level -> value -> parent's value
    tags: TagHead | None = None

    @property
    def names(self) -> list[str]:
        return list(self.heads)

    def probabilities(self, features: np.ndarray, own_heads: bool = False) -> dict[str, np.ndarray]:
        """Calibrated probabilities of every target for (N, D) features; a tree's upper levels are the sums of
        their children's, and their own heads' answers are kept under OWN + name for comparison (`own_heads`:
        each level's own head only)."""
        features = np.asarray(features, np.float32)
        out = {name: head.probabilities(features) for name, head in self.heads.items()}
        if not own_heads:
            for upper in self.tree[:-1]:
                out[OWN + upper] = out[upper]  # kept for evaluate's comparison
            self.sum_up(out)
        if self.tags is not None:
            out[TAGS] = self.tags.probabilities(features)
        return out

    def sum_up(self, probabilities: dict[str, np.ndarray]) -> None:
        """Set each upper tree level's probabilities to the sums of its children's, from the bottom level up."""
        for upper, lower in reversed(list(zip(self.tree, self.tree[1:]))):
            probabilities[upper] = probabilities[lower] @ self.membership(upper, lower)

    def membership(self, upper: str, lower: str) -> np.ndarray:
        """(lower classes, upper classes) 0/1: which parent each child belongs to."""
        up = {name: i for i, name in enumerate(self.heads[upper].classes)}
        matrix = np.zeros((len(self.heads[lower].classes), len(up)), np.float32)
        for i, name in enumerate(self.heads[lower].classes):
            parent = self.parents.get(lower, {}).get(name)
            if parent in up:
                matrix[i, up[parent]] = 1.0
        return matrix

    def answers(self, probabilities: dict[str, np.ndarray], min_confidence: float) -> list[tuple[str, str]]:
        """(answer, answered level) per row: the deepest tree level (or, without a tree, the first target) whose
        top probability is at least `min_confidence`, the answer written as its path from the top ("Apparel >
        Topwear"); ("", "") when not even the top level is sure."""
        levels = self.tree or self.names[:1]
        rows = len(next(iter(probabilities.values())))
        if not levels:  # tags only
            return [("", "")] * rows
        found = []
        for row in range(rows):
            answer = ("", "")
            for level in reversed(levels):
                p = probabilities[level][row]
                best = int(p.argmax())
                if p[best] >= min_confidence:
                    answer = (" > ".join(self.path(level, self.heads[level].classes[best])), level)
                    break
            found.append(answer)
        return found

    def answer_counts(self, probabilities: dict[str, np.ndarray], truths: dict[str, np.ndarray],
                      thresholds) -> list[dict]:
        """How `answers` does against the truth (each tree level's true value per row) at each threshold: per
        level, the photos answered there and how many of them are right there; with the totals."""
        levels = self.tree
        top = np.stack([probabilities[level].max(1) for level in levels], 1)
        right = np.stack([np.asarray(self.heads[level].classes, object)[probabilities[level].argmax(1)]
                          == np.asarray(truths[level]).astype(str) for level in levels], 1)
        rows = []
        for threshold in thresholds:
            sure = top >= threshold
            answered = sure.any(1)
            depth = len(levels) - 1 - sure[:, ::-1].argmax(1)  # the deepest sure level, as `answers` walks up
            counts = {level: {"answered": int((answered & (depth == i)).sum()),
                              "right": int((answered & (depth == i) & right[:, i]).sum())}
                      for i, level in enumerate(levels)}
            total = sum(entry["answered"] for entry in counts.values())
            rows.append({"threshold": float(threshold), "coverage": total / max(1, len(top)),
                         "accuracy_answered": sum(entry["right"] for entry in counts.values()) / max(1, total),
                         "items": int(len(top)), "levels": counts})
        return rows

    def threshold_for(self, probabilities: dict[str, np.ndarray], truths: dict[str, np.ndarray],
                      wanted: float) -> dict | None:
        """The lowest `--min-confidence` of THRESHOLD_GRID from which on every threshold answers photos of which at
        least `wanted` are right at the depth answered (training chooses it on the validation split):
        {"threshold", "coverage", "accuracy"}; None when even the highest does not."""
        rows = self.answer_counts(probabilities, truths, THRESHOLD_GRID)
        chosen = None
        for row in reversed(rows):
            if row["coverage"] == 0:  # nothing answered this high: no evidence either way
                continue
            if row["accuracy_answered"] < wanted:
                break
            chosen = row
        return None if chosen is None else {"threshold": chosen["threshold"], "coverage": round(chosen["coverage"], 6),
                                            "accuracy": round(chosen["accuracy_answered"], 6)}

    def path(self, level: str, value: str) -> list[str]:
        """The value and its ancestors, top first."""
        chain = [value]
        if level in self.tree:
            for lower in reversed(self.tree[1:self.tree.index(level) + 1]):
                chain.append(self.parents.get(lower, {}).get(chain[-1], "?"))
        return chain[::-1]

    def save(self, description: Path, weights: Path) -> None:
        from safetensors.numpy import save_file

        from catalens.files import atomic_path, write_atomic

        arrays = {}
        for i, head in enumerate(self.heads.values()):
            arrays[f"{i}.weight"] = np.ascontiguousarray(head.weight, np.float32)
            arrays[f"{i}.bias"] = np.ascontiguousarray(head.bias, np.float32)
        saved = {"targets": [{"name": name, "classes": head.classes, "temperature": head.temperature,
                              "info": head.info} for name, head in self.heads.items()],
                 "tree": self.tree, "parents": self.parents}
        if self.tags is not None:
            arrays["tags.weight"] = np.ascontiguousarray(self.tags.weight, np.float32)
            arrays["tags.bias"] = np.ascontiguousarray(self.tags.bias, np.float32)
            saved["tags"] = {"names": self.tags.names, "thresholds": [float(t) for t in self.tags.thresholds],
                             "info": self.tags.info}
        with atomic_path(weights) as temporary:
            save_file(arrays, str(temporary))
        write_atomic(description, json.dumps(saved, indent=1, ensure_ascii=False))

    @classmethod
    def load(cls, description: Path, weights: Path) -> Targets:
        from safetensors.numpy import load_file

        try:
            saved = json.loads(Path(description).read_text())
            arrays = load_file(str(weights))
            heads = {entry["name"]: Head(list(entry["classes"]), arrays[f"{i}.weight"], arrays[f"{i}.bias"],
                                         float(entry.get("temperature", 1.0)), entry.get("info", {}))
                     for i, entry in enumerate(saved["targets"])}
            tags = saved.get("tags")
            tag_head = TagHead(list(tags["names"]), arrays["tags.weight"], arrays["tags.bias"],
                               np.asarray(tags["thresholds"], np.float32), tags.get("info", {})) if tags else None
            return cls(heads, list(saved.get("tree", [])), dict(saved.get("parents", {})), tag_head)
        except (OSError, ValueError, KeyError) as error:
            raise CatalensError(f"cannot read the target heads in {Path(description).parent} ({str(error)[:100]}): "
                                "the run directory is damaged; retrain it with --targets") from error
