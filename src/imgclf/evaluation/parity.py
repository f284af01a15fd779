"""The parity table: how each exported file compares with the Keras model it came from.

Export measures it (``imgclf.export``); the console, ``report.md`` and ``report.html`` show it.
"""

from __future__ import annotations

from typing import Any


def parity_rows(report: dict[str, Any]) -> list[list[str]]:
    """The parity table as rows of strings, header first (for the console and ``report.md``)."""
    splits = list(report["splits"])
    header = [
        "variant",
        "size MB",
        *[f"{s} acc" for s in splits],
        "agreement",
        "mean |Δp|",
        "max |Δp|",
        "p50 ms",
        "p90 ms",
    ]
    rows = [header]
    for v in report["variants"]:
        cells = [v["name"], f"{v['bytes'] / 1e6:.2f}"]
        cells += [f"{v['accuracy'][s]:.3f}" if "accuracy" in v else "—" for s in splits]
        cells += [f"{v['agreement']:.3f}" if "agreement" in v else "—"]
        cells += [f"{v[k]:.4f}" if k in v else "—" for k in ("mean_abs_diff", "max_abs_diff")]
        cells += [f"{v['latency_ms'][k]:.2f}" if "latency_ms" in v else "—" for k in ("p50", "p90")]
        rows.append(cells)
    return rows


def parity_markdown(report: dict[str, Any]) -> str:
    """The parity report as Markdown (``report.md``)."""
    header, *rows = parity_rows(report)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    n = ", ".join(f"{n} {s}" for s, n in report["splits"].items())
    text = (
        f"Parity of each export with the Keras model on the run's images ({n}); latency at batch 1.\n\n"
        + "\n".join(lines)
    )
    if report.get("unknown_threshold") is not None:
        text += (
            f"\n\nAnswer \"not sure\" when the top probability is below {report['unknown_threshold']:.3f}: "
            "95 % of the correct validation answers are above it (`metrics.json`, `unknown_threshold`)."
        )
    if report["warnings"]:
        text += "\n\n" + "\n".join(f"- **warning**: {w}" for w in report["warnings"])
    return text + "\n"
