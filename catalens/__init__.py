"""catalens: classify e-commerce product images.

    import catalens
    result = catalens.train(data="fashion-mnist", model="fastcnn", out="runs/fm", epochs=15)
    metrics = catalens.evaluate("runs/fm", data="fashion-mnist", out="runs/fm/eval")
    model = catalens.Model.load("runs/fm")
    model.predict(["shoe.jpg"], k=3)   # [[("Sneaker", 0.93), ("Sandal", 0.05), ...]]
"""

__version__ = "0.1.0"

from .catalog import Catalog  # noqa: E402
from .data import DataOptions, load_catalog  # noqa: E402
from .errors import CatalensError  # noqa: E402
from .evaluate import evaluate  # noqa: E402
from .predict import predict  # noqa: E402
from .run import Model  # noqa: E402
from .train import train  # noqa: E402

__all__ = ["Catalog", "CatalensError", "DataOptions", "Model", "evaluate", "load_catalog", "predict", "train",
           "__version__"]
