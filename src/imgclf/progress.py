"""Progress bars and status lines on stderr (rich); ``quiet`` silences both. ``JsonReporter``
says the same as JSON lines, for programs that show imgclf's progress themselves (the Studio)."""

from __future__ import annotations

import contextlib
import json
import math
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import IO, Any

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

    def epoch(self, stage: str, epoch: int, logs: dict[str, float]) -> None:
        """An epoch of ``stage`` ("head" or "fine_tune") ended with ``logs`` (loss, accuracy,
        val_loss, val_accuracy): shown by ``JsonReporter``; the console has its bars."""


class JsonReporter(Reporter):
    """Every message, bar and epoch as one JSON object per line on ``stream`` (stderr):
    ``{"event": "info" | "warning", "message"}``, ``{"event": "progress", "task", "done",
    "total"}`` (at most every ``interval`` seconds, and at the end), ``{"event": "epoch",
    "stage", "epoch", "logs"}``. ``imgclf --log-json``.

    Example
    -------
    >>> import io; out = io.StringIO()
    >>> JsonReporter(out).info("3 classes"); out.getvalue().strip()
    '{"event": "info", "message": "3 classes"}'
    """

    def __init__(self, stream: IO[str] | None = None, interval: float = 0.25):
        super().__init__(quiet=False)
        self.stream, self.interval = stream, interval
        self._lock = threading.Lock()

    def emit(self, event: dict[str, Any]) -> None:
        line = json.dumps(event, ensure_ascii=False, default=_number)
        with self._lock:
            stream = self.stream or sys.stderr
            stream.write(line + "\n")
            stream.flush()

    def info(self, message: str) -> None:
        self.emit({"event": "info", "message": shown(message, keep_newlines=True)})

    def warn(self, message: str) -> None:
        self.emit({"event": "warning", "message": shown(message, keep_newlines=True)})

    @contextlib.contextmanager
    def bar(self, description: str, total: int) -> Iterator[Callable[[int], None]]:
        done, last = 0, 0.0
        task = shown(description)

        def advance(n: int) -> None:
            nonlocal done, last
            done += n
            now = time.monotonic()
            if now - last >= self.interval or done >= total:
                last = now
                self.emit({"event": "progress", "task": task, "done": done, "total": total})

        self.emit({"event": "progress", "task": task, "done": 0, "total": total})
        yield advance

    def epoch(self, stage: str, epoch: int, logs: dict[str, float]) -> None:
        self.emit({"event": "epoch", "stage": stage, "epoch": epoch, "logs": {k: float(v) for k, v in logs.items()}})


def _number(value: Any) -> Any:
    """NumPy numbers as JSON numbers; NaN and infinities as null (JSON has neither)."""
    value = float(value)
    return value if math.isfinite(value) else None
