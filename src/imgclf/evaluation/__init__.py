"""Judging a model: metrics (``metrics``), plots (``plots``, matplotlib's Figure API), the
files of an evaluation (``outputs``), the parity table (``parity``) and ``report.html``."""
