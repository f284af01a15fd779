"""Command-line layer only: parse options, call the Python API, print, map errors to exit codes."""

from __future__ import annotations

import atexit
import csv
import io
import json
import os
import sys
from pathlib import Path

import click

from .errors import ImgclfError, UsageError

EXIT_USAGE = 2


def _reporter(ctx: click.Context):
    from .progress import Reporter

    return Reporter(quiet=ctx.obj.get("quiet", False))


def _csv_list(value: str, option: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise UsageError(f"{option}: give at least one value")
    return items


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars or status lines.")
@click.version_option(package_name="imgclf")
@click.pass_context
def cli(ctx: click.Context, debug: bool, quiet: bool) -> None:
    """imgclf: a folder of images, one subfolder per class -> a small accurate classifier."""
    ctx.obj = {"debug": debug, "quiet": quiet}


# --- check -------------------------------------------------------------------------------


@cli.command()
@click.argument("data", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option(
    "--near-duplicates", is_flag=True, help="Also find near-identical images (backbone embeddings)."
)
@click.option(
    "--threshold",
    type=float,
    default=0.97,
    show_default=True,
    help="Cosine similarity for --near-duplicates.",
)
@click.option(
    "--label-issues", is_flag=True, help="Also rank likely mislabeled images (cleanlab on embeddings)."
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Where --label-issues writes label_issues.csv/.png (default ./check-<data>).",
)
@click.option(
    "--max-paths", type=int, default=5, show_default=True, help="Paths shown per problem (all with --json)."
)
@click.pass_context
def check(
    ctx: click.Context,
    data: Path,
    as_json: bool,
    max_paths: int,
    near_duplicates: bool,
    threshold: float,
    label_issues: bool,
    out: Path | None,
) -> None:
    """Dataset doctor: statistics and problems of DATA. Exit 0 clean, 1 warnings, 2 fatal."""
    from .data.doctor import check_dataset

    if not 0 < threshold <= 1:
        raise UsageError(f"--threshold {threshold}: must be in (0, 1]")
    report = check_dataset(data)
    written = {}
    if (near_duplicates or label_issues) and report.exit_code < 2:
        from .evaluation.data_issues import embedding_checks

        out = out or Path(f"check-{data.resolve().name}")
        written = embedding_checks(
            report,
            near_duplicates=near_duplicates,
            threshold=threshold,
            label_issues=label_issues,
            out=out,
            reporter=_reporter(ctx),
        )
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    else:
        _print_check(report, max_paths)
        for name, path in written.items():
            click.echo(f"{name}: {path}")
    ctx.exit(report.exit_code)


@cli.command()
@click.argument("run", type=click.Path(path_type=Path))
@click.pass_context
def issues(ctx: click.Context, run: Path) -> None:
    """Rank a run's likely mislabeled images (writes RUN/label_issues.csv and .png)."""
    from .evaluation.data_issues import run_label_issues

    written, count = run_label_issues(run, reporter=_reporter(ctx))
    click.echo(f"{count} likely label issue(s)")
    for name, path in written.items():
        click.echo(f"{name}: {path}")


def _print_check(report, max_paths: int) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False, width=None if sys.stdout.isatty() else 140)
    splits = list(report.counts)
    table = Table(
        "class",
        *splits,
        title=f"{report.root} ({report.layout}, {report.files_scanned} files, {report.seconds:.1f} s)",
    )
    for c in report.classes:
        table.add_row(c, *(str(report.counts[s][c]) for s in splits))
    console.print(table)
    stats = report.image_stats
    if stats.get("images"):
        w, h = stats["width"], stats["height"]
        console.print(
            f"images: {stats['images']}; width {w['min']}..{w['max']} (median {w['median']:g}), "
            f"height {h['min']}..{h['max']} (median {h['median']:g}); modes {stats['modes']}; "
            f"formats {stats['formats']}; EXIF-rotated {stats['exif_rotated']}"
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
        console.print(f"[{colour}]{p.severity}[/{colour}] {p.kind}: {p.message}")
        for path in p.paths[:max_paths]:
            console.print(f"    {path}")
        if len(p.paths) > max_paths:
            console.print(f"    ... and {len(p.paths) - max_paths} more (--json lists all)")


# --- train -------------------------------------------------------------------------------


@cli.command()
@click.argument("data", type=click.Path(path_type=Path), required=False)
@click.option(
    "--model", default="efficientnet_lite0", show_default=True, help="Backbone (see `imgclf models`)."
)
@click.option(
    "--weights",
    default="imagenet",
    show_default=True,
    help="imagenet (pretrained), none (train from scratch) or a weights file for the backbone.",
)
@click.option(
    "--fine-tune",
    default="off",
    show_default=True,
    help="Stage 2 on images: off, auto (when >= 50 images per class) or a fraction of blocks, e.g. 0.3.",
)
@click.option(
    "--augment",
    type=click.Choice(["light", "strong", "off"]),
    default="light",
    show_default=True,
    help="Fine-tuning augmentation (flip, rotation, zoom, brightness, contrast).",
)
@click.option(
    "--fine-tune-lr", type=float, default=1e-4, show_default=True, help="Peak fine-tuning learning rate."
)
@click.option("--fine-tune-epochs", type=int, default=20, show_default=True)
@click.option("--fine-tune-patience", type=int, default=5, show_default=True)
@click.option("--tensorboard", is_flag=True, help="Write TensorBoard logs into RUN/tensorboard/.")
@click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path),
    default=None,
    help="Repeat a run: its config.json (options given here override it).",
)
@click.option(
    "--resume",
    type=click.Path(path_type=Path),
    default=None,
    help="Continue an interrupted run directory from its last checkpoint.",
)
@click.option(
    "--epochs",
    type=int,
    default=100,
    show_default=True,
    help="Most head epochs (early stopping ends sooner).",
)
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True, help="Adam learning rate.")
@click.option("--dropout", type=float, default=0.2, show_default=True)
@click.option("--label-smoothing", type=float, default=0.1, show_default=True)
@click.option(
    "--patience",
    type=int,
    default=10,
    show_default=True,
    help="Epochs without val-loss gain before stopping.",
)
@click.option(
    "--val-split", type=float, default=0.2, show_default=True, help="Fraction of each class for validation."
)
@click.option(
    "--test-split", type=float, default=0.0, show_default=True, help="Fraction of each class for testing."
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--input-size", type=int, default=None, help="Input size in pixels (default: the backbone's).")
@click.option(
    "--out", type=click.Path(path_type=Path), default=None, help="Run directory (default runs/<data>-<time>)."
)
@click.option(
    "--background",
    default="white",
    show_default=True,
    help="Colour transparent pixels are composited onto: white, black, gray, #RRGGBB or R,G,B.",
)
@click.option(
    "--near-duplicate-threshold",
    type=float,
    default=0.97,
    show_default=True,
    help="Images whose embeddings are this similar (cosine) stay on one side of the split; 1 turns it off.",
)
@click.option(
    "--class-weight",
    type=click.Choice(["auto", "none"]),
    default="auto",
    show_default=True,
    help="auto: balanced class weights when the largest class is over 3x the smallest.",
)
@click.option(
    "--export", "do_export", is_flag=True, help="Export .tflite in all four precisions, with a parity report."
)
@click.pass_context
def train(
    ctx: click.Context,
    data: Path | None,
    out: Path | None,
    background: str,
    do_export: bool,
    config_file: Path | None,
    resume: Path | None,
    **options,
) -> None:
    """Train on DATA (one subfolder per class, or train/ val/ test/) and write a run directory."""
    from click.core import ParameterSource

    from .data.decode import parse_color
    from .training.config import TrainConfig, read_config_file
    from .training.run import train_from_config

    given = {
        k
        for k in (*options, "background", "out")
        if ctx.get_parameter_source(k) == ParameterSource.COMMANDLINE
    }
    reference = None
    if resume and config_file:
        raise UsageError("--resume and --config: give one (--resume continues a run, --config repeats one)")
    if resume or config_file:
        source = (resume / "config.json") if resume else config_file
        if resume and not source.is_file():
            raise UsageError(
                f"--resume {resume}: not a run directory (no config.json); start it with `imgclf train`"
            )
        config, reference = read_config_file(source)
        if resume:
            config.out = str(resume)
            if given:
                raise UsageError(f"--resume: continues with the run's own options; drop {sorted(given)}")
        else:
            config.out = None  # a new run directory, unless --out
        for name in given - {"background", "out"}:
            setattr(config, name, options[name])
        if data is not None and not resume:
            config.data = str(data)
    elif data is None:
        raise UsageError("train: give DATA (a folder of class subfolders), --config FILE or --resume RUN")
    else:
        config = TrainConfig(data=str(data), **options)
    if "background" in given or not (resume or config_file):
        config.background = parse_color(background)
    if out is not None:
        config.out = str(out)
    try:
        result = train_from_config(
            config, _reporter(ctx), resume=resume is not None, reference=None if resume else reference
        )
    except KeyboardInterrupt:
        where = config.out or "the run directory"
        click.echo(f"imgclf: interrupted; finished epochs are saved: imgclf train --resume {where}", err=True)
        ctx.exit(130)
    m = result.metrics
    lines = [f"{s} accuracy: {m[s]['accuracy']:.3f} ({m[s]['n']} images)" for s in ("val", "test") if s in m]
    lines.append(f"run: {result.run_dir}")
    lines.append(f"model: {result.run_dir / 'model.keras'}")
    lines.append(
        f"plots: {result.run_dir / 'confusion_matrix.png'}, {result.run_dir / 'predictions_grid.png'}"
    )
    lines.append(f"report: {result.run_dir / 'report.html'}")
    click.echo("\n".join(lines))
    if do_export:
        from .export.run import ExportConfig

        _export_and_print(ExportConfig(run=str(result.run_dir)), ctx)


# --- evaluate / predict / benchmark: any model format ------------------------------------


def _model_options(f):
    """--labels, --input-mean/--input-std (for .tflite files without metadata) and --threads."""
    f = click.option("--threads", type=int, default=None, help="LiteRT threads (default: all cores).")(f)
    f = click.option(
        "--input-std", type=float, default=None, help=".tflite without metadata: (pixel - mean) / std."
    )(f)
    f = click.option(
        "--input-mean", type=float, default=None, help=".tflite without metadata: see --input-std."
    )(f)
    return click.option(
        "--labels", type=click.Path(path_type=Path), default=None, help="Labels file, one per line."
    )(f)


def _load(
    model: Path, labels: Path | None, input_mean: float | None, input_std: float | None, threads: int | None
):
    from .inference.predictor import load

    if threads is not None and threads < 1:
        raise UsageError(f"--threads {threads}: must be >= 1")
    return load(model, labels=labels, input_mean=input_mean, input_std=input_std, threads=threads)


@cli.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("data", type=click.Path(path_type=Path))
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Where to write metrics and plots (default MODEL_DIR/eval-<data>).",
)
@click.option("--batch-size", type=int, default=32, show_default=True)
@_model_options
def evaluate(model: Path, data: Path, out: Path | None, batch_size: int, **load_options) -> None:
    """Evaluate a run or model (.keras, .tflite, SavedModel) on a labelled DATA folder: metrics and plots."""
    clf = _load(model, **load_options)
    out = out or (clf.source.parent / f"eval-{data.resolve().name}")
    metrics = clf.evaluate(data, out=out, batch_size=batch_size)
    topk = next((k for k in metrics if k.startswith("top") and k.endswith("_accuracy")), None)
    extra = f", {topk.replace('_', ' ')}: {metrics[topk]:.3f}" if topk and metrics[topk] is not None else ""
    click.echo(f"accuracy: {metrics['accuracy']:.3f} ({metrics['n']} images{extra})")
    if metrics["skipped_images"]:
        click.echo(f"skipped {len(metrics['skipped_images'])} unreadable image(s)", err=True)
    click.echo(f"results: {out}")


@cli.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--top-k", type=int, default=3, show_default=True)
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True
)
@click.option("--batch-size", type=int, default=32, show_default=True)
@_model_options
def predict(
    model: Path, paths: tuple[Path, ...], top_k: int, fmt: str, batch_size: int, **load_options
) -> None:
    """Top-k labels for image files or folders of images (.keras, .tflite, SavedModel or a run)."""
    from .inference.predictor import expand_inputs

    files = expand_inputs(paths)
    if not files:
        raise UsageError(f"no image files found in {', '.join(map(str, paths))}")
    clf = _load(model, **load_options)
    results = clf.predict(files, top_k=top_k, batch_size=batch_size)
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
        from rich.console import Console
        from rich.table import Table

        table = Table("path", *(f"#{i + 1}" for i in range(top_k)))
        for r in results:
            cells = [f"{p['label']} {p['score']:.1%}" for p in r.get("predictions", [])]
            if "error" in r:
                cells = [f"[red]error: {r['error']}[/red]"]
            table.add_row(r["path"], *cells)
        Console(highlight=False, width=None if sys.stdout.isatty() else 140).print(table)
    if any("error" in r for r in results):
        n = sum("error" in r for r in results)
        click.echo(f"{n} of {len(results)} file(s) could not be read", err=True)


@cli.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--runs", type=int, default=100, show_default=True, help="Timed runs after warm-up.")
@click.option("--batch", type=int, default=1, show_default=True, help="Images per call.")
@_model_options
def benchmark(model: Path, runs: int, batch: int, **load_options) -> None:
    """Latency (p50/p90) and throughput of a model on random images (decoding excluded)."""
    from .inference.benchmark import benchmark as run_benchmark

    for option, value in (("--runs", runs), ("--batch", batch)):
        if value < 1:
            raise UsageError(f"{option} {value}: must be >= 1")
    result = run_benchmark(_load(model, **load_options), runs=runs, batch=batch)
    for key, value in result.items():
        click.echo(f"{key}: {value}")


# --- export ------------------------------------------------------------------------------


def _export_and_print(config, ctx: click.Context) -> None:
    from rich.console import Console
    from rich.table import Table

    from .export.run import export_run, report_rows

    report = export_run(config, reporter=_reporter(ctx))
    out = Path(config.out) if config.out else Path(config.run) / "export"
    header, *rows = report_rows(report)
    table = Table(*header, title="parity with the Keras model (latency at batch 1)")
    for row in rows:
        table.add_row(*row)
    Console(highlight=False, width=None if sys.stdout.isatty() else 140).print(table)
    for warning in report["warnings"]:
        click.secho(f"WARNING: {warning}", fg="red", bold=True, err=True)
    click.echo(f"exported to {out} (report: {out / 'report.md'})")


@cli.command()
@click.argument("run", type=click.Path(path_type=Path))
@click.option(
    "--format", "formats", default="tflite", show_default=True, help="Comma-separated: tflite,savedmodel."
)
@click.option(
    "--quantize",
    default="float32,dynamic,float16,int8",
    show_default=True,
    help="Comma-separated precisions.",
)
@click.option(
    "--out", type=click.Path(path_type=Path), default=None, help="Export folder (default RUN/export)."
)
@click.option(
    "--calibration-images",
    type=int,
    default=200,
    show_default=True,
    help="int8: training images to calibrate.",
)
@click.option(
    "--io-type", default="uint8", show_default=True, help="int8 model input/output: uint8, int8 or float32."
)
@click.option(
    "--int8-head",
    type=click.Choice(["refit", "keep"]),
    default="refit",
    show_default=True,
    help="int8: re-fit the head on the int8 backbone's features (recovers accuracy), or keep it.",
)
@click.option("--threads", type=int, default=None, help="LiteRT threads for the parity and latency runs.")
@click.option(
    "--runs", type=int, default=50, show_default=True, help="Latency runs per variant (after warm-up)."
)
@click.option("--name", default=None, help="Metadata: model name.")
@click.option("--description", default=None, help="Metadata: model description.")
@click.option("--model-version", "version", default="1", show_default=True, help="Metadata: model version.")
@click.option("--author", default="", help="Metadata: author.")
@click.option("--license", "license_", default="", help="Metadata: licence.")
@click.pass_context
def export(
    ctx: click.Context,
    run: Path,
    formats: str,
    quantize: str,
    out: Path | None,
    license_: str,
    runs: int,
    **options,
) -> None:
    """Export a run to .tflite (float32, dynamic, float16, int8; labels and normalization inside)
    and/or SavedModel, with a parity report against the Keras model."""
    from .export.run import ExportConfig

    config = ExportConfig(
        run=str(run),
        formats=_csv_list(formats, "--format"),
        quantize=_csv_list(quantize, "--quantize"),
        out=str(out) if out else None,
        license=license_,
        latency_runs=runs,
        **options,
    )
    _export_and_print(config.validate(), ctx)


@cli.command()
@click.argument("run", type=click.Path(path_type=Path))
def report(run: Path) -> None:
    """(Re)build RUN/report.html: one self-contained page with the run's whole story."""
    from .evaluation.report import build_report

    if not run.is_dir():
        raise UsageError(f"{run}: not a run directory (made by `imgclf train`)")
    click.echo(f"report: {build_report(run)}")


# --- serve -------------------------------------------------------------------------------


@cli.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on; anything but loopback exposes the model to the network.",
)
@click.option("--port", type=int, default=8000, show_default=True, help="Port (0: any free port).")
@click.option(
    "--workers", type=int, default=None, help="Inference threads, one model each (default: cores, at most 4)."
)
@click.option(
    "--queue",
    type=int,
    default=32,
    show_default=True,
    help="Requests that may wait for a worker; more get 503.",
)
@click.option(
    "--max-upload-mb",
    type=float,
    default=10.0,
    show_default=True,
    help="Largest request body; larger get 413.",
)
@click.option(
    "--timeout", type=float, default=30.0, show_default=True, help="Seconds per request before 408/504."
)
@click.option(
    "--top-k", type=int, default=3, show_default=True, help="Labels returned when the request does not say."
)
@click.pass_context
def serve(
    ctx: click.Context,
    model: Path,
    host: str,
    port: int,
    workers: int | None,
    queue: int,
    max_upload_mb: float,
    timeout: float,
    top_k: int,
) -> None:
    """Serve a run or model over HTTP: POST /v1/classify, GET /v1/model, a web page at /, docs at /docs.

    A run directory serves its exported float32 .tflite through LiteRT (else model.keras)."""
    from .serving import require_serve_dependencies
    from .serving import serve as run_server

    require_serve_dependencies()
    if max_upload_mb <= 0:
        raise UsageError(f"--max-upload-mb {max_upload_mb}: must be > 0")
    run_server(
        model,
        host,
        port,
        log_level="warning" if ctx.obj.get("quiet") else "info",
        echo=click.echo,
        workers=workers,
        queue=queue,
        max_upload_bytes=int(max_upload_mb * 1024 * 1024),
        timeout_s=timeout,
        top_k=top_k,
    )


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def models(as_json: bool) -> None:
    """List the backbones: parameters, FLOPs at the default input size, weights, offline or not."""
    from . import backbones
    from .backbones.stats import backbone_stats

    rows = []
    for name in backbones.names():
        b = backbones.get(name)
        rows.append(
            {
                "name": name,
                "input_size": b.input_size,
                **backbone_stats(name),
                "weights": b.weight_source,
                "offline": b.offline(),
            }
        )
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'name':<20} {'params':>7} {'GFLOPs':>7} {'size':>5} {'feat':>5} {'offline':>7}  weights")
    for r in rows:
        click.echo(
            f"{r['name']:<20} {r['params'] / 1e6:>6.2f}M {r['flops'] / 1e9:>7.2f} {r['input_size']:>5} "
            f"{r['features']:>5} {'yes' if r['offline'] else 'no':>7}  {r['weights']}"
        )
    click.echo(
        "not offline: `imgclf train --model NAME` downloads the weights once, "
        "or pass --weights PATH (--weights none trains from scratch)"
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``imgclf`` console script; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    if debug:
        os.environ["IMGCLF_DEBUG"] = "1"
    try:
        code = cli.main(args=args, prog_name="imgclf", standalone_mode=False)
        if isinstance(code, int):  # ctx.exit(code) returns here when not in standalone mode
            return code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return EXIT_USAGE if isinstance(exc, click.UsageError) else exc.exit_code
    except click.exceptions.Abort:
        click.echo("imgclf: interrupted", err=True)
        return 130
    except ImgclfError as exc:
        if debug:
            raise
        click.echo(f"imgclf: error: {exc}", err=True)
        return exc.exit_code
    return 0


_finished_with: list[int] = []


def console_main() -> None:
    """The ``imgclf`` console script: ``main()``, then a quick exit (see ``_skip_teardown``)."""
    atexit.register(_skip_teardown)  # registered first, so it runs after every other handler
    code = main()
    _finished_with.append(code)
    sys.exit(code)


def _skip_teardown() -> None:
    # Python's teardown of TensorFlow's modules and C++ objects took 0.7-1.2 s per command
    # here and writes nothing: every output is already renamed into place and every other
    # exit handler (temporary folders, logging) has run. Only after a normal return.
    if _finished_with and "tensorflow" in sys.modules:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # closed or broken pipe: nothing left to lose
                pass
        os._exit(_finished_with[0])


if __name__ == "__main__":
    console_main()
