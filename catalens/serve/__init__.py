"""`catalens serve`: a model behind a REST API and a web page, with a lasting prediction history.

    catalens serve runs/zoomed --port 8000              # http://127.0.0.1:8000/ (page), /docs (OpenAPI)
"""

from __future__ import annotations

from pathlib import Path

from .app import ServeOptions, create_app

__all__ = ["ServeOptions", "create_app", "serve"]


def serve(model_path: str | Path, host: str = "127.0.0.1", port: int = 8000, options: ServeOptions | None = None,
          backend: str = "auto", access_log: bool = False) -> None:
    """Load the model once and serve it with uvicorn until interrupted."""
    import uvicorn

    app = create_app(model_path, options, backend=backend)
    uvicorn.run(app, host=host, port=port, access_log=access_log, log_level="info", timeout_graceful_shutdown=5)
