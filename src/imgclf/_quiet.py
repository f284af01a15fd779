"""Silence output that native libraries write straight to file descriptors 1 and 2.

TensorFlow, the TFLite converter and LiteRT print start-up notices, MLIR dumps and
"Created TensorFlow Lite XNNPACK delegate" lines from C++, where no Python logging
setting reaches. Users should see them only when something fails or with ``--debug``
(``IMGCLF_DEBUG=1``), so they are captured at the descriptor level.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def captured_fds(fds: tuple[int, ...] = (1, 2)) -> Iterator[Callable[[], str]]:
    """Redirect ``fds`` to a temporary file; yields a function returning what was written.

    Example
    -------
    >>> with captured_fds((2,)) as log:
    ...     _ = os.write(2, b"noise\\n")
    ...     written = log()
    >>> written
    'noise\\n'
    """
    if os.environ.get("IMGCLF_DEBUG"):
        yield lambda: ""
        return
    sys.stdout.flush()
    sys.stderr.flush()
    with tempfile.TemporaryFile(mode="w+b") as sink:
        saved = {fd: os.dup(fd) for fd in fds}
        for fd in fds:
            os.dup2(sink.fileno(), fd)
        try:
            yield lambda: (sink.seek(0), sink.read().decode("utf-8", "replace"))[1]
        finally:
            for fd, copy in saved.items():
                os.dup2(copy, fd)
                os.close(copy)
