"""The run directory's layout: every file catalens writes into a run directory is named here, and only here.

    runs/fm/
      config.yaml              the resolved training config (catalens train --config runs/fm/config.yaml re-runs it)
      model_card.json          classes, preprocessing, data, training, validation metrics, calibration (card.py)
      model.safetensors        the best epoch's weights
      last.safetensors         the last epoch's weights
      checkpoint.pt            model, optimizer, scheduler and random state of the last epoch, for --resume
      history.csv              one row per epoch
      training_curves.png      loss and accuracy per epoch
      problems.csv             images that could not be read (only when there were some)
      text_model.json          --text runs: the title vectoriser and the text and fused heads
      text_model.safetensors
      targets.json             --targets runs: each target's classes, temperature and the tree they form
      targets.safetensors      and each target's head (models/targets.py)
      model.onnx               catalens export (the self-contained ONNX file)
      model.int8.onnx          catalens export --int8, used when the card's int8 check passed
"""

from catalens.files import PROBLEMS_FILE

CONFIG_FILE = "config.yaml"
CARD_FILE = "model_card.json"
WEIGHTS_FILE = "model.safetensors"
LAST_WEIGHTS_FILE = "last.safetensors"
CHECKPOINT_FILE = "checkpoint.pt"
HISTORY_FILE = "history.csv"
CURVES_FILE = "training_curves.png"
TEXT_FILE = "text_model.json"
TEXT_WEIGHTS_FILE = "text_model.safetensors"
TARGETS_FILE = "targets.json"
TARGETS_WEIGHTS_FILE = "targets.safetensors"
ONNX_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"

FILES = (CONFIG_FILE, CARD_FILE, WEIGHTS_FILE, LAST_WEIGHTS_FILE, CHECKPOINT_FILE, HISTORY_FILE, CURVES_FILE,
         PROBLEMS_FILE, TEXT_FILE, TEXT_WEIGHTS_FILE, TARGETS_FILE, TARGETS_WEIGHTS_FILE, ONNX_FILE, INT8_FILE)
