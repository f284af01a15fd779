"""Names from the user's disk, made safe to show and to store.

A file or folder name can hold anything but ``/`` and NUL: newlines, ANSI escape sequences
that recolour or rewrite the terminal, Rich markup such as ``[/]``, right-to-left overrides,
and bytes that are not UTF-8 (which Python keeps as lone surrogates that no UTF-8 writer
accepts). Everything imgclf prints or writes to JSON passes such names through ``shown``.
"""

from __future__ import annotations

import unicodedata

# Bidirectional overrides and isolates reorder what follows them on screen.
_BIDI = {chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))}


def _escape(ch: str) -> str:
    code = ord(ch)
    if code <= 0xFF:
        return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(ch, f"\\x{code:02x}")
    return f"\\u{code:04x}"


def _unsafe(ch: str) -> bool:
    return unicodedata.category(ch) in ("Cc", "Cs", "Zl", "Zp") or ch in _BIDI


def shown(text: object, keep_newlines: bool = False) -> str:
    """``text`` with control characters, line separators, bidi overrides and undecodable
    bytes written as backslash escapes: one line (unless ``keep_newlines``), printable,
    encodable as UTF-8.

    Example
    -------
    >>> shown("cat\\x1b[31m\\nred")
    'cat\\\\x1b[31m\\\\nred'
    >>> shown(b"x\\xff.png".decode("utf-8", "surrogateescape"))
    'x\\\\udcff.png'
    """
    text = str(text)
    if not any(_unsafe(ch) for ch in text):
        return text
    return "".join(_escape(ch) if _unsafe(ch) and not (keep_newlines and ch == "\n") else ch for ch in text)


def name_problem(name: str) -> str | None:
    """Why a class name cannot be a label (one line of labels.txt and of the ``.tflite``
    metadata, read back identically), or None when it can.

    Example
    -------
    >>> name_problem("ankle boot") is None, name_problem("cat ")
    (True, 'it starts or ends with white space')
    """
    if any(_unsafe(ch) for ch in name) or name.splitlines() != [name]:
        return "it holds control characters, line breaks or bytes that are not UTF-8"
    if name != name.strip():
        return "it starts or ends with white space"
    return None


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type's name if it has none): the cause
    of a failure in one line, whatever a library put after it.

    Example
    -------
    >>> first_line(RuntimeError("converter exploded\\nstack..."))
    'converter exploded'
    """
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
