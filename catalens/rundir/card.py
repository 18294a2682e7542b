"""The model card (model_card.json in a run directory, and inside exported ONNX files): typed and versioned.

Format 2 (this version) adds to format 1 the training data's identity and content fingerprint (`data.identity`,
`data.content`: evaluate recognises the training data however it is spelled) and what the validation score was
measured on (`validation_data`). Format 1 cards load: `from_dict` migrates them. Keys a card holds that this
version does not know are kept (`extra`) and written back unchanged.

    card = ModelCard.from_dict(json.loads(path.read_text()), where=path)
    card.classes, card.preprocessing["input_size"], card.to_dict()
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from catalens.errors import CatalensError

CARD_FORMAT = "catalens-model/2"
FORMAT_1 = "catalens-model/1"
REQUIRED = ("architecture", "classes", "preprocessing")
NOT_RECORDED = "not recorded (the card was written before catalens recorded it)"


@dataclass
class ModelCard:
    architecture: str  # a catalens model name, timm:<name> or ensemble:<...>
    classes: list[str]
    preprocessing: dict  # Preprocessing.to_dict(): input_size, channels, mean, std, interpolation, crop, resize
    num_params: int = 0
    data: dict = field(default_factory=dict)  # spec, source, identity, content, options, fingerprint, counts
    validation_data: dict = field(default_factory=dict)  # data, split, items, provenance
    training: dict = field(default_factory=dict)  # epochs, augment, optimizer, freeze, head, ...
    validation: dict = field(default_factory=dict)  # best validation metrics
    best_epoch: int | None = None
    pretrained: dict | None = None  # where the pretrained weights came from
    hierarchy: dict | None = None  # class -> its category levels (category trees)
    level: int | None = None
    recipe: dict | None = None  # the auto recipe: chosen, why, cv_accuracy, tried
    text: dict | None = None  # --text: columns, heads and their validation metrics (models/fusion.py)
    targets: dict | None = None  # --targets: names, tree, each head's validation metrics (models/targets.py)
    # temperature scaling fitted on the validation split (models/calibration.py): temperature(s), NLL and ECE
    # before/after, the validation risk-coverage curve; {"status": "uncalibrated", ...} without a validation
    # split; None on cards written before catalens calibrated
    calibration: dict | None = None
    # `catalens export --int8` (report/int8.py): status "used" or "float kept", why, the tolerance checked, float32
    # and int8 validation accuracy, their agreement; None when never checked
    int8: dict | None = None
    created: str = ""
    catalens_version: str = ""
    torch_version: str = ""
    extra: dict = field(default_factory=dict)  # keys this version does not know, kept as they were

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @classmethod
    def from_dict(cls, raw: dict, where: object = "the model card") -> ModelCard:
        """A card from its JSON form, format 1 migrated; a one-line error for anything else."""
        if not isinstance(raw, dict):
            raise CatalensError(f"{where} is not a catalens model card (not a JSON object)")
        version = raw.get("format")
        if version not in (FORMAT_1, CARD_FORMAT):
            raise CatalensError(f"{where} is not a catalens model card this version reads (format {version!r}; "
                                f"expected {CARD_FORMAT}): retrain, or upgrade catalens")
        missing = [key for key in REQUIRED if key not in raw]
        if missing:
            raise CatalensError(f"{where} lacks {', '.join(missing)}: the run directory is damaged; retrain it")
        raw = migrate_1_to_2(raw) if version == FORMAT_1 else raw
        known = {f.name for f in fields(cls)} - {"extra"}
        values = {key: value for key, value in raw.items() if key in known}
        extra = {key: value for key, value in raw.items() if key not in known | {"format", "num_classes"}}
        return cls(**values, extra=extra)

    def to_dict(self) -> dict:
        """The JSON form (format 2), unknown keys included."""
        out: dict[str, Any] = {"format": CARD_FORMAT}
        for f in fields(self):
            if f.name != "extra":
                out[f.name] = getattr(self, f.name)
            if f.name == "classes":
                out["num_classes"] = self.num_classes
        return out | self.extra

    # dict-style reading, as catalens 0.1's cards were plain dicts: card["classes"], card.get("hierarchy")
    def __getitem__(self, key: str):
        return self.to_dict()[key]

    def get(self, key: str, default=None):
        return self.to_dict().get(key, default)


def migrate_1_to_2(raw: dict) -> dict:
    """Format 1 -> 2: what format 2 requires and format 1 did not record is marked as such."""
    raw = dict(raw, format=CARD_FORMAT)
    data = dict(raw.get("data") or {})
    data.setdefault("identity", None)  # evaluate then compares the source strings, as format 1 did
    data.setdefault("content", None)
    raw["data"] = data
    raw.setdefault("validation_data", {"data": data.get("spec"), "split": "val", "items": data.get("val_items", 0),
                                       "provenance": NOT_RECORDED})
    training = dict(raw.get("training") or {})
    training.setdefault("head", "sgd")
    raw["training"] = training
    return raw
