"""Speed and memory of the dataset doctor (issue 4).

    make bench            # or: .venv/bin/python benchmarks/check_speed.py

`imgclf check --json` (no near-duplicates) over the full Fashion-MNIST training set as
folders (60,000 PNG files, 10 classes): wall time, files/s and peak RSS of the process.
Targets: at least 2,000 files/s on this 2-core machine, peak RSS < 1 GB.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from report import COMMAND, update_section
from train_speed import BIN, RESULTS, dataset


def main() -> None:
    data = dataset(6000, test_per_class=0) / "train"
    with tempfile.TemporaryDirectory(prefix="imgclf-bench-check-") as tmp:
        out = Path(tmp) / "report.json"
        with open(out, "w") as f:
            start_env = {**os.environ}
            proc_args = [str(BIN / "imgclf"), "check", str(data), "--json"]
            # exit code 1 (warnings: 28 px images are "too small") is expected here
            wall, rss = _run(proc_args, f, start_env)
        report = json.loads(out.read_text())
    files = report["files_scanned"]
    rate = files / wall
    section = (
        "\n".join(
            [
                "## Dataset doctor speed (issue 4)",
                "",
                f"`{COMMAND}` (`benchmarks/check_speed.py`): `imgclf check DATA --json`, no near-duplicates, over the "
                "Fashion-MNIST training set as folders.",
                "",
                "| files | wall s (whole process) | files/s | peak RSS GiB | target |",
                "|---|---|---|---|---|",
                f"| {files} | {wall:.1f} | {rate:.0f} | {rss:.2f} | >= 2,000 files/s, < 1 GB |",
                "",
                f"Targets met: files/s {'yes' if rate >= 2000 else '**no**'}, RSS {'yes' if rss < 1 else '**no**'}.",
            ]
        )
        + "\n"
    )
    print(section)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "check_speed.json").write_text(
        json.dumps({"files": files, "wall_s": wall, "files_per_s": rate, "peak_rss_gib": rss}, indent=2)
    )
    update_section("check_speed", section)


def _run(args, stdout, env) -> tuple[float, float]:
    import time

    start = time.perf_counter()
    proc = subprocess.Popen(args, env=env, stdout=stdout)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) not in (0, 1):
        raise SystemExit(f"{' '.join(args)} failed")
    return time.perf_counter() - start, usage.ru_maxrss / 2**20


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    main()
