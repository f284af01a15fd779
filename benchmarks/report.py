"""Write one benchmark's section of BENCHMARKS.md, leaving the other sections as they are.

The file opens with the machine, the date and the one command that regenerates every
table; each benchmark owns the text between its ``<!-- NAME:begin -->`` and
``<!-- NAME:end -->`` markers.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMAND = "make bench"


def machine() -> str:
    """CPU model, cores, RAM and Python of this machine, in one line."""
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")),
        platform.processor(),
    )
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    mem_kib = int(next(line.split()[1] for line in meminfo if line.startswith("MemTotal")))
    return f"{cpu}, {os.cpu_count()} cores, {mem_kib / 2**20:.0f} GiB RAM, Python {platform.python_version()}"


def update_section(name: str, body: str, path: Path = ROOT / "BENCHMARKS.md") -> None:
    """Replace (or append) section ``name`` of BENCHMARKS.md and refresh the header."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    old = path.read_text() if path.exists() else ""
    sections = old[old.index("<!--") :] if "<!--" in old else ""
    # Sessions run on different machines: each section says which one it was measured on, and
    # the header's machine line (that of the oldest tables) is left as it is.
    block = f"{begin}\n{body.rstrip()}\n\n_Measured on {machine()}._\n{end}"
    if begin in sections:
        sections = re.sub(re.escape(begin) + r".*?" + re.escape(end), lambda _: block, sections, flags=re.S)
    else:
        sections = (sections.rstrip() + "\n\n" + block).lstrip()
    first = re.search(r"^Machine: .*?\. ", old, flags=re.M)
    header = (
        "# Benchmarks\n\n"
        f"{first.group(0) if first else f'Machine: {machine()}. '}Last updated {dt.date.today().isoformat()}.\n\n"
        f"Reproduce every table with one command: `{COMMAND}` (it installs Debian's `dataset-fashion-mnist` "
        "if missing). The machine is shared and noisy (±20 % run to run): compare numbers within one run.\n\n"
    )
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(header + sections.rstrip() + "\n")
    os.replace(tmp, path)
