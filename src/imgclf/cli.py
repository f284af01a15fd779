"""Command-line layer only: options generated from the config dataclasses, a call into
``imgclf.api``, printing, and errors mapped to exit codes (2 for bad input)."""

from __future__ import annotations

import atexit
import os
import sys
from pathlib import Path
from typing import Any

import click

# The config classes live in modules that import nothing heavy: `imgclf --help` stays instant.
from .api import BenchmarkConfig, CheckConfig, EmbedConfig, EvaluateConfig, PredictConfig
from .cli_params import config_params, config_values
from .errors import ImgclfError
from .exports.config import ExportConfig
from .serving.config import ServeConfig
from .serving.studio.config import StudioConfig
from .text import shown
from .training.config import TrainConfig


def _reporter(ctx: click.Context):
    from .progress import JsonReporter, Reporter

    root = ctx.find_root().params
    return JsonReporter() if root.get("log_json") else Reporter(quiet=root.get("quiet", False))


def _say(message: str, err: bool = False) -> None:
    # Messages carry file and class names: their control characters are escaped, so a name
    # cannot rewrite the terminal.
    click.echo(shown(message, keep_newlines=True), err=err)


def _console():
    from rich.console import Console

    return Console(highlight=False, width=None if sys.stdout.isatty() else 140)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars or status lines.")
@click.option(
    "--log-json", is_flag=True,
    help="Progress, messages and epochs as JSON lines on stderr instead of bars (for programs that show them).",
)
@click.version_option(package_name="imgclf")
def cli(debug: bool, quiet: bool, log_json: bool) -> None:
    """imgclf: a folder of images, one subfolder per class -> a small accurate classifier."""


# --- check -------------------------------------------------------------------------------


@cli.command()
@config_params(CheckConfig)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--max-paths", type=int, default=5, show_default=True, help="Paths shown per problem (all with --json).")
@click.pass_context
def check(ctx: click.Context, as_json: bool, max_paths: int, **_: Any) -> None:
    """Dataset doctor: statistics and problems of DATA. Exit 0 clean, 1 warnings, 2 fatal."""
    import json

    from .api import check as run_check

    values = config_values(ctx, CheckConfig)
    result = run_check(values.pop("data"), reporter=_reporter(ctx), **values)
    if as_json:
        click.echo(json.dumps(result.report.to_dict(), indent=2, ensure_ascii=False))
    else:
        from .cli_output import print_check

        print_check(_console(), result.report, max_paths)
        for name, path in result.written.items():
            _say(f"{name}: {path}")
    ctx.exit(result.exit_code)


@cli.command()
@click.argument("run", type=click.Path(path_type=Path))
@click.pass_context
def issues(ctx: click.Context, run: Path) -> None:
    """Rank a run's likely mislabeled images (writes RUN/label_issues.csv and .png)."""
    from .api import label_issues

    result = label_issues(run, reporter=_reporter(ctx))
    _say(f"{result.count} likely label issue(s)")
    for name, path in result.written.items():
        _say(f"{name}: {path}")


# --- train -------------------------------------------------------------------------------


@cli.command()
@config_params(TrainConfig)
@click.option(
    "--config", "config_file", type=click.Path(path_type=Path), default=None,
    help="Repeat a run: its config.json (options given here override it).",
)
@click.option(
    "--resume", type=click.Path(path_type=Path), default=None,
    help="Continue an interrupted run directory from its last checkpoint.",
)
@click.option("--export", "do_export", is_flag=True, help="Export .tflite in all four precisions, with a parity report.")
@click.pass_context
def train(ctx: click.Context, config_file: Path | None, resume: Path | None, do_export: bool, **_: Any) -> None:
    """Train on DATA (one subfolder per class, or train/ val/ test/) and write a run directory."""
    from .api import run_training

    given = config_values(ctx, TrainConfig, given_only=True)
    data = given.pop("data", None)
    config, record = TrainConfig.resolve(data, config=config_file, resume=resume, **given)
    try:
        if resume is not None:
            result = run_training(config, _reporter(ctx), resumed=record)
        else:
            result = run_training(config, _reporter(ctx), reference=record)
    except KeyboardInterrupt:
        _say(f"imgclf: interrupted; finished epochs are saved: imgclf train --resume {config.out}", err=True)
        ctx.exit(130)
    m, run = result.metrics, result.run_dir
    for split in ("val", "test"):
        if split in m:
            _say(f"{split} accuracy: {m[split]['accuracy']:.3f} ({m[split]['n']} images)")
    from .rundir import RunDir

    _say(f"run: {run}\nmodel: {run / RunDir.MODEL}")
    _say(f"plots: {run / RunDir.CONFUSION}, {run / RunDir.GRID}\nreport: {run / RunDir.REPORT}")
    if do_export:
        _export_and_print(ctx, {"run": str(run)})


# --- embed / cache import: embeddings at scale ----------------------------------------------


@cli.command()
@config_params(EmbedConfig)
@click.pass_context
def embed(ctx: click.Context, **_: Any) -> None:
    """Embed DATA into Parquet shards (--out), here or on a Ray cluster (--ray); a rerun adds only what is missing."""
    from .api import embed as run_embed

    values = config_values(ctx, EmbedConfig)
    try:
        result = run_embed(values.pop("data"), reporter=_reporter(ctx), **values)
    except KeyboardInterrupt:
        _say("imgclf: interrupted; the shards written are whole: run the same command to finish", err=True)
        ctx.exit(130)
    nodes = f" on {len(result.nodes)} node(s)" if len(result.nodes) > 1 else ""
    _say(
        f"embedded {result.embedded} image(s){nodes}, {result.skipped} already there, {result.failed} unusable, "
        f"in {result.seconds:.1f} s -> {len(result.shards)} new shard(s) in {values['out']}"
    )


@cli.group()
def cache() -> None:
    """The local embedding cache."""


@cache.command("import")
@click.argument("shards", type=click.Path(path_type=Path))
@click.pass_context
def cache_import(ctx: click.Context, shards: Path) -> None:
    """Put the embeddings of Parquet shards (imgclf embed's) into the local embedding cache."""
    from .api import import_embeddings

    counts = import_embeddings(shards, reporter=_reporter(ctx))
    for key, n in counts.items():
        _say(f"imported {n} embedding(s) of {key}")
    if not counts:
        _say(f"{shards}: no usable embeddings in the shards", err=True)


# --- evaluate / predict / benchmark: any model format ------------------------------------


@cli.command()
@config_params(EvaluateConfig)
@click.pass_context
def evaluate(ctx: click.Context, **_: Any) -> None:
    """Evaluate a run or model (.keras, .tflite, .onnx, OpenVINO .xml, SavedModel) on a labelled DATA folder."""
    from .api import evaluate as run_evaluate

    values = config_values(ctx, EvaluateConfig)
    evaluation = run_evaluate(values.pop("model"), values.pop("data"), **values)
    metrics = evaluation.metrics
    topk = next((k for k in metrics if k.startswith("top") and k.endswith("_accuracy")), None)
    extra = f", {topk.replace('_', ' ')}: {metrics[topk]:.3f}" if topk and metrics[topk] is not None else ""
    _say(f"accuracy: {metrics['accuracy']:.3f} ({metrics['n']} images{extra})")
    if metrics["skipped_images"]:
        _say(f"skipped {len(metrics['skipped_images'])} unreadable image(s)", err=True)
    _say(f"results: {evaluation.out}")


@cli.command()
@config_params(PredictConfig)
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True)
@click.pass_context
def predict(ctx: click.Context, fmt: str, **_: Any) -> None:
    """Top-k labels for image files or folders of images (.keras, .tflite, .onnx, .xml, SavedModel or a run)."""
    from .api import predict as run_predict
    from .cli_output import print_predictions

    values = config_values(ctx, PredictConfig)
    if values["output"] or values["ray"]:
        from .api import predict_to_file

        written = predict_to_file(values.pop("model"), values.pop("paths"), reporter=_reporter(ctx), **values)
        _say(f"{written.images} prediction(s) in {written.seconds:.1f} s -> {written.path}")
        if written.errors:
            _say(f"{written.errors} of {written.images} file(s) could not be read (see the error column)", err=True)
        return
    results = run_predict(values.pop("model"), values.pop("paths"), **values)
    print_predictions(_console(), results, values["top_k"], fmt)
    if any("error" in r for r in results):
        n = sum("error" in r for r in results)
        _say(f"{n} of {len(results)} file(s) could not be read", err=True)


@cli.command()
@config_params(BenchmarkConfig)
@click.pass_context
def benchmark(ctx: click.Context, **_: Any) -> None:
    """Latency (p50/p90) and throughput of a model on random images (decoding excluded)."""
    from .api import benchmark as run_benchmark

    values = config_values(ctx, BenchmarkConfig)
    for key, value in run_benchmark(values.pop("model"), **values).items():
        _say(f"{key}: {value}")


# --- export / report -----------------------------------------------------------------------


def _export_and_print(ctx: click.Context, values: dict[str, Any]) -> None:
    from .api import export as run_export
    from .evaluation.parity import parity_rows

    result = run_export(values.pop("run"), reporter=_reporter(ctx), **values)
    from rich.table import Table

    header, *rows = parity_rows(result.report)
    table = Table(*header, title="parity with the Keras model (latency at batch 1)")
    for row in rows:
        table.add_row(*row)
    _console().print(table)
    for warning in result.warnings:
        click.secho(f"WARNING: {shown(warning)}", fg="red", bold=True, err=True)
    _say(f"exported to {result.out} (report: {result.out / 'report.md'})")


@cli.command()
@config_params(ExportConfig)
@click.pass_context
def export(ctx: click.Context, **_: Any) -> None:
    """Export a run to .tflite (float32, dynamic, float16, int8; labels and normalization inside),
    SavedModel, ONNX, OpenVINO or an offline web page, with a parity report against the Keras model."""
    _export_and_print(ctx, config_values(ctx, ExportConfig))


@cli.command()
@click.argument("run", type=click.Path(path_type=Path))
def report(run: Path) -> None:
    """(Re)build RUN/report.html: one self-contained page with the run's whole story."""
    from .api import report as build

    _say(f"report: {build(run)}")


# --- serve / models --------------------------------------------------------------------------


@cli.command()
@config_params(ServeConfig)
@click.pass_context
def serve(ctx: click.Context, **_: Any) -> None:
    """Serve a run or model over HTTP: POST /v1/classify, GET /v1/model, a web page at /, docs at /docs.

    A run directory serves its exported float32 .tflite through LiteRT (else model.keras)."""
    from .serving import serve as run_server

    config = ServeConfig(**config_values(ctx, ServeConfig))
    quiet = ctx.find_root().params.get("quiet", False)
    run_server(config, log_level="warning" if quiet else "info", echo=click.echo)


@cli.command()
@config_params(StudioConfig)
@click.pass_context
def studio(ctx: click.Context, **_: Any) -> None:
    """A local, offline app in the browser: collect images into classes (files, folders, webcam),
    train with live progress, look at the mistakes, try the model and export it.

    PROJECT (default: imgclf-project, made if missing) is an ordinary data folder,
    PROJECT/data/<class>/, beside PROJECT/runs/."""
    from .serving.studio import studio as run_studio

    config = StudioConfig(**config_values(ctx, StudioConfig))
    quiet = ctx.find_root().params.get("quiet", False)
    run_studio(config, log_level="warning" if quiet else "info", echo=click.echo)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def models(as_json: bool) -> None:
    """List the backbones: parameters, FLOPs at the default input size, weights, offline or not."""
    import json

    from .api import models as list_models

    rows = list_models()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    _say(f"{'name':<20} {'params':>7} {'GFLOPs':>7} {'size':>5} {'feat':>5} {'offline':>7}  weights")
    for r in rows:
        click.echo(
            f"{r['name']:<20} {r['params'] / 1e6:>6.2f}M {r['flops'] / 1e9:>7.2f} {r['input_size']:>5} "
            f"{r['features']:>5} {'yes' if r['offline'] else 'no':>7}  {r['weights']}"
        )
    click.echo(
        "not offline: `imgclf train --backbone NAME` downloads the weights once, "
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
        return 2 if isinstance(exc, click.UsageError) else exc.exit_code
    except click.exceptions.Abort:
        click.echo("imgclf: interrupted", err=True)
        return 130
    except ImgclfError as exc:
        if debug:
            raise
        click.echo(f"imgclf: error: {shown(exc)}", err=True)
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
    # Python's teardown of TensorFlow's modules and C++ objects takes about a second per
    # command (BENCHMARKS.md, "Design measurements") and writes nothing: every output is
    # already renamed into place and every other exit handler (temporary folders, logging)
    # has run. Only after a normal return.
    if _finished_with and "tensorflow" in sys.modules:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # closed or broken pipe: nothing left to lose
                pass
        os._exit(_finished_with[0])


if __name__ == "__main__":
    console_main()
