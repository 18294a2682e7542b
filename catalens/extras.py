"""Optional dependencies (`pip install 'catalens[lite,text]'`): whether one is installed, asked in one way."""

from __future__ import annotations

from importlib import import_module


def installed(*modules: str) -> bool:
    """Whether every one of `modules` imports (a missing or broken install: False)."""
    try:
        for module in modules:
            import_module(module)
    except ImportError:
        return False
    return True
