"""`catalens serve`: a model behind a REST API and a web page, with a lasting prediction history.

    catalens serve runs/zoomed --port 8000              # http://127.0.0.1:8000/ (page), /docs (OpenAPI)
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path

from catalens.apps.serve.app import ServeOptions, create_app

__all__ = ["ServeOptions", "create_app", "serve"]


def serve(model_path: str | Path, host: str = "127.0.0.1", port: int = 8000, options: ServeOptions | None = None,
          backend: str = "auto", access_log: bool = False, insecure_no_auth: bool = False) -> None:
    """Load the model once and serve it with uvicorn until interrupted. Off loopback, an API key is required
    (options.api_key) unless `insecure_no_auth`."""
    import uvicorn

    check_auth(host, (options or ServeOptions()).api_key, insecure_no_auth)

    app = create_app(model_path, options, backend=backend)
    # uvicorn shuts down cleanly on SIGTERM (the history queue written) and then raises the signal again; a stop
    # asked for is a success (exit 0, as for Ctrl-C), which service managers expect
    main = threading.current_thread() is threading.main_thread()  # only the main thread may set handlers
    previous = signal.signal(signal.SIGTERM, stopped) if main else None
    try:
        uvicorn.run(app, host=host, port=port, access_log=access_log, log_level="info", timeout_graceful_shutdown=5)
    finally:
        if main:  # None: the handler was not set from Python
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def stopped(_signum, _frame) -> None:
    raise SystemExit(0)


def is_loopback(host: str) -> bool:
    """Does `host` (an address or a name) only ever listen on this machine's loopback?"""
    import ipaddress
    import socket

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        try:
            addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
        except OSError:
            return False
        return bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)


def check_auth(host: str, api_key: str | None, insecure_no_auth: bool) -> None:
    """Listening beyond loopback needs an API key: the history holds every uploaded image."""
    if api_key or insecure_no_auth or is_loopback(host):
        return
    from catalens.errors import CatalensError

    raise CatalensError(f"--host {host} listens beyond this machine: give --api-key KEY (or set CATALENS_API_KEY) so "
                        "that only clients with the key can predict and read the history, or --insecure-no-auth "
                        "to serve everyone")
