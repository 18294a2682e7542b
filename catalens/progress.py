"""Progress bars and console output (rich), quiet when not attached to a terminal."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

# markup off: what is printed carries file names, titles, class and column names from the data, whose brackets
# ("x[bold]y.jpg", "catalens[text]") must come out literally; styles are given as rich Text, never as markup
console = Console(stderr=True, highlight=False, markup=False)


def bars_enabled() -> bool:
    return console.is_terminal and not os.environ.get("CATALENS_NO_PROGRESS")


def make_progress(*extra_columns, disable: bool = False) -> Progress:
    return Progress(
        TextColumn("{task.description}", style="bold", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        *extra_columns,
        TimeElapsedColumn(),
        TextColumn("ETA", markup=False),
        TimeRemainingColumn(),
        console=console,
        disable=disable or not bars_enabled(),
        transient=False,
    )


def progress(iterable: Iterable, total: int | None = None, description: str = "") -> Iterator:
    """Wrap an iterable in a progress bar (a no-op when output is not a terminal)."""
    with make_progress() as bar:
        yield from bar.track(iterable, total=total, description=description)


def quiet() -> bool:
    """Ranks other than 0 of a data-parallel run say nothing: rank 0 speaks for the run."""
    return bool(os.environ.get("CATALENS_QUIET"))


def info(message: str) -> None:
    """One line to the user. Printed literally: messages carry file names, titles and column names from the data,
    whose brackets must not be read as markup."""
    if not quiet():
        console.print(message, markup=False, highlight=False, soft_wrap=True)  # one line: never wrapped


def warn(message: str) -> None:
    if not quiet():
        from rich.text import Text

        console.print(Text.assemble(("warning: ", "yellow"), message), highlight=False, soft_wrap=True)


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()
