"""User-facing errors: one message that names the file or option and the fix, one exit code.

The CLI prints ``imgclf: error: <message>`` on stderr and exits with ``exit_code``;
tracebacks only with ``--debug``.
"""


class ImgclfError(Exception):
    """Base class of every error meant for the user rather than for a developer."""

    exit_code = 2


class DataError(ImgclfError):
    """The data folder cannot be used as given (missing, empty, too few classes or images)."""


class UsageError(ImgclfError):
    """An option has a value imgclf cannot use."""


class ModelError(ImgclfError):
    """A model file or run directory is missing, corrupt or of an unknown kind."""


class WeightsError(ImgclfError):
    """Backbone weights are unavailable offline or unusable; the message says how to supply them."""


class DiskFullError(ImgclfError):
    """An output could not be written for lack of space; nothing half-written was left."""
