"""Colours as users type them (``--background``): names, ``#RRGGBB`` or ``R,G,B``."""

from __future__ import annotations

from ..errors import UsageError

WHITE = (255, 255, 255)
_NAMED_COLORS = {
    "white": (255, 255, 255),
    "black": (0, 0, 0),
    "gray": (128, 128, 128),
    "grey": (128, 128, 128),
}


def is_rgb(value: object) -> bool:
    """Three whole numbers 0-255, as a parsed colour is. Example: ``is_rgb((255, 0, 0))`` -> True."""
    return (
        isinstance(value, (tuple, list))
        and len(value) == 3
        and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in value)
    )


def parse_color(text: str) -> tuple[int, int, int]:
    """``"white"``, ``"#10a0ff"`` or ``"16,160,255"`` -> an RGB tuple; ``UsageError`` otherwise.

    Example
    -------
    >>> parse_color("#ff8000")
    (255, 128, 0)
    """
    t = text.strip().lower()
    if t in _NAMED_COLORS:
        return _NAMED_COLORS[t]
    try:
        rgb = (
            tuple(int(t[i : i + 2], 16) for i in (1, 3, 5))
            if t.startswith("#") and len(t) == 7
            else tuple(int(v) for v in t.split(","))
        )
        if len(rgb) == 3 and all(0 <= v <= 255 for v in rgb):
            return rgb  # type: ignore[return-value]
    except ValueError:
        pass
    raise UsageError(f"--background {text}: use white, black, gray, #RRGGBB or R,G,B with values 0-255")
