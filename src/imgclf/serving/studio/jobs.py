"""Training and exporting from the Studio: one ``imgclf --log-json train`` (or ``export``)
process per project at a time, its JSON-lines events kept in memory so that a page (or a
reloaded page) can follow it.

A separate process rather than a thread: Ctrl-C's clean stop (SIGINT: finished epochs are
saved, the run can be resumed) is the cancel button, TensorFlow's memory is given back when
the run ends, and the page drives exactly the command a user would type.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import UsageError
from ...rundir import ExportDir, RunDir
from ...training.config import TrainConfig
from .project import Conflict, Project

# What the page may set, as the CLI's options; everything else is the preset's.
OPTIONS = ("preset", "backbone", "epochs", "fine_tune", "augment")
MAX_EVENTS = 20_000  # a 100,000-image run sends ~2,000 (progress is sent at most 4 times a second)


@dataclass
class Job:
    """One job of the project (``kind``: "train" or "export"): its process, state and events
    so far. ``state`` is "running", then "finished", "failed" or "cancelled".
    """

    id: str
    run_dir: Path
    options: dict[str, Any]
    kind: str = "train"
    process: subprocess.Popen | None = None
    state: str = "running"
    events: list[dict[str, Any]] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    ended: float | None = None
    cancelling: bool = False

    def summary(self) -> dict[str, Any]:
        """What the page shows of the job, without its events."""
        return {
            "id": self.id,
            "kind": self.kind,
            "run": self.run_dir.name,
            "options": self.options,
            "state": self.state,
            "started": self.started,
            "ended": self.ended,
            "events": len(self.events),
        }

    def add(self, event: dict[str, Any]) -> None:
        if len(self.events) < MAX_EVENTS or event.get("event") != "progress":
            self.events.append(event)


class Jobs:
    """The project's training job (one at a time), started and cancelled from the page.

    Example
    -------
    >>> jobs = Jobs(Project.open("my-project"))  # doctest: +SKIP
    >>> job = jobs.start({"preset": "fast"}); job.state  # doctest: +SKIP
    'running'
    """

    def __init__(self, project: Project):
        self.project = project
        self.current: Job | None = None
        self._lock = threading.Lock()

    def start(self, options: dict[str, Any]) -> Job:
        """Check ``options`` (``OPTIONS`` only, as ``TrainConfig`` checks them) and start a run
        in ``runs/<time>``. ``Conflict`` while another job runs; ``UsageError`` for a bad option."""
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise UsageError(f"{unknown[0]}: not an option the Studio sets (it sets {', '.join(OPTIONS)})")
        chosen = {k: v for k, v in options.items() if v not in (None, "")}
        TrainConfig(data=str(self.project.data), **chosen).validate()
        with self._lock:
            self._check_idle()
            stamp = time.strftime("%Y%m%d-%H%M%S")
            run_dir = self.project.runs / stamp
            n = 2
            while run_dir.exists():
                run_dir, n = self.project.runs / f"{stamp}-{n}", n + 1
            args = ["train", str(self.project.data), "--out", str(run_dir)]
            for name, value in chosen.items():
                args += [f"--{name.replace('_', '-')}", str(value)]
            return self._launch(Job(run_dir.name, run_dir, chosen), args)

    def export(self, run_dir: Path, formats: str = "tflite") -> Job:
        """Export a finished run (``imgclf export RUN --format FORMATS``: by default four
        ``.tflite`` precisions with the parity report) as the project's job."""
        with self._lock:
            self._check_idle()
            job = Job(f"{run_dir.name}-export", run_dir, {}, kind="export")
            return self._launch(job, ["export", str(run_dir), "--format", formats])

    def _check_idle(self) -> None:
        if self.current and self.current.state == "running":
            raise Conflict(f"a {self.current.kind} job is under way ({self.current.run_dir.name}); wait for it or cancel it")

    def _launch(self, job: Job, args: list[str]) -> Job:
        job.process = subprocess.Popen(
            [sys.executable, "-m", "imgclf.cli", "--log-json", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace",
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            # Not the Studio's Ctrl-C: the job stops when the page says so, or with the Studio.
            start_new_session=True,
        )
        self.current = job
        threading.Thread(target=self._follow, args=(job,), daemon=True).start()
        return job

    def cancel(self) -> Job:
        """Stop the running job as Ctrl-C stops ``imgclf train``: finished epochs are kept."""
        job = self.current
        if job is None or job.state != "running" or job.process is None:
            raise Conflict("no training run is under way")
        job.cancelling = True
        job.process.send_signal(signal.SIGINT)
        return job

    def stop(self) -> None:
        """Cancel a running job and wait for it (the Studio is shutting down)."""
        job = self.current
        if job and job.state == "running" and job.process:
            job.process.send_signal(signal.SIGINT)
            try:
                job.process.wait(60)
            except subprocess.TimeoutExpired:
                job.process.kill()

    def _follow(self, job: Job) -> None:
        assert job.process is not None and job.process.stdout is not None and job.process.stderr is not None
        output: list[str] = []
        reader = threading.Thread(target=lambda: output.extend(job.process.stdout), daemon=True)
        reader.start()
        for line in job.process.stderr:
            job.add(_event(line))
        code = job.process.wait()
        reader.join(10)
        job.ended = time.time()
        job.state = "finished" if code == 0 else "cancelled" if job.cancelling else "failed"
        end: dict[str, Any] = {"event": "end", "state": job.state, "exit_code": code}
        if job.state == "finished":
            end["metrics"] = run_metrics(job.run_dir)
            end["files"] = run_files(job.run_dir)
            if job.kind == "export":
                end["export"] = export_summary(job.run_dir)
        job.add(end)


def _event(line: str) -> dict[str, Any]:
    """A JSON-lines event, or a plain line (an error, Python's own output) as a message."""
    line = line.rstrip("\n")
    try:
        event = json.loads(line)
    except ValueError:
        event = None
    if isinstance(event, dict) and "event" in event:
        return event
    kind = "error" if line.startswith("imgclf: error:") else "log"
    return {"event": kind, "message": line.removeprefix("imgclf: error: ")}


def run_metrics(run_dir: Path) -> dict[str, Any]:
    """The accuracies of a finished run (``metrics.json``), for the page: per split, and per class.

    Example
    -------
    >>> run_metrics(Path("my-project/runs/20261201-101500"))["val"]["accuracy"]  # doctest: +SKIP
    0.93
    """
    metrics = RunDir(run_dir).read_metrics()
    if not metrics:
        return {}
    out: dict[str, Any] = {
        "images_embedded": metrics.get("images_embedded"),  # the rest came from the embedding cache
        "images_from_cache": metrics.get("images_from_cache"),
        "seconds": (metrics.get("timing_seconds") or {}).get("total"),
        "unknown_threshold": (metrics.get("unknown_threshold") or {}).get("value"),
    }
    for split in ("val", "test"):
        if isinstance(metrics.get(split), dict):
            m = metrics[split]
            out[split] = {k: m.get(k) for k in ("accuracy", "n", "per_class", "confusion_matrix")}
    return out


# What a run offers for download (relative to the run), when present.
DOWNLOADS = (
    *(f"{RunDir.EXPORT}/{ExportDir.model_name(p)}" for p in ("float32", "int8", "float16", "dynamic")),
    *(f"{RunDir.EXPORT}/{name}" for name in (ExportDir.LABELS, ExportDir.REPORT_MD, ExportDir.REPORT_JSON)),
    RunDir.MODEL,
    RunDir.LABELS,
    RunDir.METRICS,
    RunDir.REPORT,
)


# The web export's folder, offered as one zip.
WEB_ZIP = "web.zip"


def run_files(run_dir: Path) -> list[dict[str, Any]]:
    """``[{"name", "bytes"}]`` of the run's files offered for download (``DOWNLOADS``, and
    ``web.zip`` with the bytes of the web page's folder when it was exported).

    Example
    -------
    >>> [f["name"] for f in run_files(Path("my-project/runs/20261201-101500"))][:1]  # doctest: +SKIP
    ['export/model_float32.tflite']
    """
    out = []
    for name in DOWNLOADS:
        path = run_dir / name
        if path.is_file() and not path.is_symlink():
            out.append({"name": name, "bytes": path.stat().st_size})
    web = RunDir(run_dir).export.web
    if (web / "index.html").is_file() and not web.is_symlink():
        files = [p for p in web.rglob("*") if p.is_file() and not p.is_symlink()]
        out.append({"name": WEB_ZIP, "bytes": sum(p.stat().st_size for p in files)})
    return out


def export_summary(run_dir: Path) -> list[dict[str, Any]]:
    """Each exported variant's size, agreement with the Keras model and accuracy on the test
    images (validation ones when there is no test split), from ``export/report.json``.

    Example
    -------
    >>> export_summary(Path("my-project/runs/20261201-101500"))[1]["name"]  # doctest: +SKIP
    'float32'
    """
    report = RunDir(run_dir).export.read_report()
    out = []
    for v in (v for v in report.get("variants", []) if isinstance(v, dict)):
        accuracy = v.get("accuracy") if isinstance(v.get("accuracy"), dict) else {}
        split = "test" if "test" in accuracy else "val" if "val" in accuracy else None
        out.append({
            "name": v.get("name"), "bytes": v.get("bytes"), "agreement": v.get("agreement"),
            "accuracy": accuracy.get(split) if split else None, "split": split,
        })
    return out


def zip_folder(folder: Path, name: str, skip: tuple[str, ...] = ()) -> bytes:
    """``folder`` as a zip whose entries sit in ``name/`` (symbolic links and the top-level
    folders in ``skip`` left out): a run (its checkpoints skipped) or its web page. In
    memory: a run is tens of MB (its models), and the Studio serves one user.

    Example
    -------
    >>> data = zip_folder(Path("my-project/runs/20261201-101500/export/web"), "web")  # doctest: +SKIP
    """
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            relative = path.relative_to(folder)
            if path.is_file() and not path.is_symlink() and relative.parts[0] not in skip:
                archive.write(path, Path(name) / relative)
    return buf.getvalue()


def web_runtime_problem() -> str | None:
    """Why the web page cannot be exported here (LiteRT.js neither cached nor downloadable), or None."""
    from ...errors import UsageError
    from ...exports.web_runtime import runtime_files

    try:
        runtime_files()
    except UsageError as exc:
        return str(exc)
    return None
