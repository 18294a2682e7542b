"""The four training modes (engine/modes.py): each is chosen from the config, trains through the one Trainer,
writes the run directory and reloads to predict."""

import json

import pytest
from conftest import make_folder

import catalens
from catalens.engine.config import make_config
from catalens.engine.modes import CachedHead, CachedPrefix, FineTune, LinearHead, choose_mode
from catalens.models import create_model
from catalens.models.finetune import FreezePlan

LITE0 = "timm:tf_efficientnet_lite0"
MODES = [  # (mode, train options, what the model card says)
    (FineTune, {"model": "cnn3", "epochs": 2}, {"cached_features": False, "head": "sgd"}),
    (CachedHead, {"model": LITE0, "pretrained": True, "freeze": "backbone", "head": "sgd", "epochs": 2},
     {"cached_features": True, "head": "sgd"}),
    (LinearHead, {"model": LITE0, "pretrained": True, "freeze": "backbone"}, {"cached_features": True}),
    (CachedPrefix, {"model": LITE0, "pretrained": True, "freeze": "1", "head": "sgd", "epochs": 1},
     {"cached_features": False, "head": "sgd"}),
]


@pytest.mark.parametrize("mode, options, card_says", MODES, ids=[mode.__name__ for mode, _, _ in MODES])
def test_each_mode_is_chosen_trains_and_reloads(mode, options, card_says, tmp_path):
    config = make_config(data="x", out="x", **options)
    module = create_model(config.model, 3, 3, (64, 64))
    assert type(choose_mode(config, FreezePlan(module, config.model, config.freeze, None), module)) is mode
    data = make_folder(tmp_path / "shop", per_class=10, size=64)
    result = catalens.train(data=str(data), out=str(tmp_path / "run"), input_size=64, batch_size=8, workers=0,
                            seed=0, **options)
    card = json.loads((result.run_dir / "model_card.json").read_text())
    assert {key: card["training"][key] for key in card_says} == card_says
    assert (card["training"]["cached_prefix_blocks"] is not None) == (mode is CachedPrefix)
    if mode is LinearHead:
        assert card["training"]["head"]["method"].startswith("multinomial logistic regression")
        assert result.best_epoch == 1
    predictions = catalens.Model.load(result.run_dir, backend="torch").predict([next(data.rglob("*.jpg"))], k=2)
    assert len(predictions[0]) == 2
