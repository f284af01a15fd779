"""Progress bars and status lines on stderr (rich); ``quiet`` silences both."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from .text import shown

console = Console(stderr=True, highlight=False)


class Reporter:
    """What a long operation tells the user; ``Reporter(quiet=True)`` says nothing.

    Example
    -------
    >>> r = Reporter(quiet=True)
    >>> with r.bar("embedding", total=10) as advance:
    ...     advance(10)
    """

    def __init__(self, quiet: bool = False):
        self.quiet = quiet

    # Messages carry file and class names: printed as plain text (never Rich markup) with
    # control characters escaped, so a name cannot restyle or rewrite the terminal.
    def info(self, message: str) -> None:
        if not self.quiet:
            console.print(Text(shown(message, keep_newlines=True)))

    def warn(self, message: str) -> None:
        # Warnings are shown even when quiet: they are about the user's data.
        console.print(Text.assemble(("warning:", "yellow"), " ", shown(message, keep_newlines=True)))

    @contextlib.contextmanager
    def bar(self, description: str, total: int) -> Iterator[Callable[[int], None]]:
        if self.quiet or not total:
            yield lambda n: None
            return
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=console, transient=False) as progress:
            task = progress.add_task(escape(shown(description)), total=total)
            yield lambda n: progress.advance(task, n)
