"""What the command line prints: the doctor's report and prediction tables (rich)."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import click

from .text import shown


def _cell(value: Any) -> str:
    """A file or class name as Rich text: markup such as ``[/]`` and control characters in
    names are shown as written, never interpreted."""
    from rich.markup import escape

    return escape(shown(value))


def print_check(console: Any, report: Any, max_paths: int) -> None:
    """The doctor's report as a table of classes per split, image statistics and problems."""
    from rich.table import Table

    splits = list(report.counts)
    table = Table(
        "class",
        *splits,
        title=f"{_cell(report.root)} ({report.layout}, {report.files_scanned} files, {report.seconds:.1f} s)",
    )
    for c in report.classes:
        table.add_row(_cell(c), *(str(report.counts[s][c]) for s in splits))
    console.print(table)
    stats = report.image_stats
    if stats.get("images"):
        w, h = stats["width"], stats["height"]
        console.print(
            f"images: {stats['images']}; width {w['min']}..{w['max']} (median {w['median']:g}), "
            f"height {h['min']}..{h['max']} (median {h['median']:g}); modes {stats['modes']}; "
            f"formats {_cell(stats['formats'])}; EXIF-rotated {stats['exif_rotated']}"
        )
    if report.imbalance_ratio:
        note = (
            " (> 3: `imgclf train` uses balanced class weights by default)"
            if report.imbalance_ratio > 3
            else ""
        )
        console.print(f"imbalance ratio (largest/smallest class): {report.imbalance_ratio:.2f}{note}")
    if report.ignored:
        console.print(
            f"ignored: {len(report.ignored)} file(s) (hidden/system files, symlinked folders, loose files)"
        )
    if not report.problems:
        console.print("[green]no problems found[/green]")
    for p in report.problems:
        colour = "red" if p.severity == "fatal" else "yellow"
        console.print(f"[{colour}]{p.severity}[/{colour}] {p.kind}: {_cell(p.message)}")
        for path in p.paths[:max_paths]:
            console.print(f"    {_cell(path)}")
        if len(p.paths) > max_paths:
            console.print(f"    ... and {len(p.paths) - max_paths} more (--json lists all)")


def print_predictions(console: Any, results: list[dict[str, Any]], top_k: int, fmt: str) -> None:
    """Predictions as a table, JSON or CSV (one row per label, and one per unreadable file)."""
    results = [{**r, "path": shown(r["path"])} for r in results]  # JSON and CSV writers reject undecodable names
    if fmt == "json":
        click.echo(json.dumps(results, indent=2, ensure_ascii=False))
    elif fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["path", "rank", "label", "score", "error"])
        for r in results:
            for rank, p in enumerate(r.get("predictions", []), 1):
                w.writerow([r["path"], rank, p["label"], f"{p['score']:.6f}", ""])
            if "error" in r:
                w.writerow([r["path"], "", "", "", r["error"]])
        click.echo(buf.getvalue(), nl=False)
    else:
        from rich.table import Table

        table = Table("path", *(f"#{i + 1}" for i in range(top_k)))
        for r in results:
            cells = [f"{_cell(p['label'])} {p['score']:.1%}" for p in r.get("predictions", [])]
            if "error" in r:
                cells = [f"[red]error: {_cell(r['error'])}[/red]"]
            table.add_row(_cell(r["path"]), *cells)
        console.print(table)
