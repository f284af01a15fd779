"""Using a trained model, whatever its format: ``predict``, ``evaluate`` (metrics and plots
written to a folder) and ``benchmark``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UsageError
from ..inference.load_options import LoadOptions
from ..options import option, validate_options, whole
from ._config import RayOptions
from ._config import config_from as _config

if TYPE_CHECKING:
    from ..inference.classifier import Evaluation
    from ..progress import Reporter


@dataclass(kw_only=True)
class PredictConfig(LoadOptions, RayOptions):
    """Options of ``imgclf predict``."""

    model: str = option(help="Run directory, .keras, .tflite or SavedModel folder.", argument=True)
    paths: list[str] = option(
        help="Image files, folders of images, or .csv/.parquet manifests (their path column).",
        argument=True,
        many=True,
        factory=list,
    )
    top_k: int = option(3, "Labels per image, best first.", rule=whole(1))
    batch_size: int = option(32, "Images decoded and run together.", rule=whole(1))
    output: str | None = option(
        None,
        "Write the predictions to a .parquet or .csv file, one row per image, as they come (for big "
        "jobs, and with --ray) instead of printing them.",
        metavar="FILE",
    )


@dataclass(kw_only=True)
class EvaluateConfig(LoadOptions):
    """Options of ``imgclf evaluate``."""

    model: str = option(help="Run directory, .keras, .tflite or SavedModel folder.", argument=True)
    data: str = option(
        help="Labelled folder: one subfolder per class (test/ or val/ of a split one), or a manifest.", argument=True
    )
    out: str | None = option(None, "Where to write metrics and plots (default MODEL_DIR/eval-<data>).", metavar="PATH")
    batch_size: int = option(32, "Images decoded and run together.", rule=whole(1))


@dataclass(kw_only=True)
class BenchmarkConfig(LoadOptions):
    """Options of ``imgclf benchmark``."""

    model: str = option(help="Run directory, .keras, .tflite or SavedModel folder.", argument=True)
    runs: int = option(100, "Timed runs after warm-up.", rule=whole(1))
    batch: int = option(1, "Images per call.", rule=whole(1))


def predict(
    model: str | Path | None = None,
    paths: list[str | Path] | None = None,
    *,
    config: PredictConfig | None = None,
    **options: Any,
) -> list[dict[str, Any]]:
    """Top-k labels for image files or folders of images (expanded, sorted), in input order;
    unreadable files get an ``"error"`` instead of predictions. Keywords or a ``PredictConfig``.

    Example
    -------
    >>> predict("runs/demo", ["examples/fashion-mini/test/bag"], top_k=1)[0]["predictions"]  # doctest: +SKIP
    [{'label': 'bag', 'score': 0.97}]
    """
    from ..inference.classifier import expand_inputs, load

    positional = {"model": model and str(model), "paths": paths and [str(p) for p in paths]}
    config = _config(PredictConfig, config, positional, options)
    validate_options(config)
    if config.output or config.ray:
        raise UsageError("--output/--ray: predictions are then written to a file: call predict_to_file")
    files = expand_inputs(config.paths)
    if not files:
        raise UsageError(f"no image files found in {', '.join(map(str, config.paths))}")
    clf = load(config.model, **config.load_options())
    return clf.predict(files, top_k=config.top_k, batch_size=config.batch_size)


@dataclass
class PredictionFile:
    """What ``predict_to_file`` wrote: the file, its rows (one per image) and how many are errors."""

    path: Path
    images: int
    errors: int
    seconds: float


def predict_to_file(
    model: str | Path | None = None,
    paths: list[str | Path] | None = None,
    *,
    config: PredictConfig | None = None,
    reporter: Reporter | None = None,
    **options: Any,
) -> PredictionFile:
    """Top-k labels for many images, written to ``output`` (.parquet or .csv, one row per
    image) as they come, here or on a Ray cluster (``ray``). The file appears whole or not
    at all. Keywords or a ``PredictConfig``.

    Example
    -------
    >>> predict_to_file("runs/demo", ["photos/"], output="preds.parquet", ray="local").images  # doctest: +SKIP
    600
    """
    import time

    from ..inference.classifier import expand_inputs, load
    from ..inference.prediction_files import check_output, open_predictions, prediction_rows
    from ..progress import Reporter

    reporter = reporter or Reporter()
    positional = {"model": model and str(model), "paths": paths and [str(p) for p in paths]}
    config = _config(PredictConfig, config, positional, options)
    validate_options(config)
    if not config.output:
        raise UsageError("--output: give the .parquet or .csv file to write the predictions to")
    output = check_output(config.output)
    if config.ray:
        from ..embeddings.on_ray import connect, require_ray

        require_ray()
    started = time.perf_counter()
    files = expand_inputs(config.paths)
    if not files:
        raise UsageError(f"no image files found in {', '.join(map(str, config.paths))}")
    if config.ray:
        connect(config.ray)  # before the model loads: a wrong address costs seconds, not minutes
    clf = load(config.model, **config.load_options())
    with open_predictions(output, config.top_k) as writer, reporter.bar("predicting", len(files)) as advance:
        if config.ray:
            from ..inference.on_ray import predict_on_ray

            predict_on_ray(
                clf.portable(), files, writer, advance, config.ray, config.actors, config.cpus_per_actor,
                config.batch_size,
            )
        else:
            chunk = 64 * config.batch_size  # rows held at a time: memory stays flat however many files
            for start in range(0, len(files), chunk):
                part = files[start : start + chunk]
                writer.add(prediction_rows(clf.predict(part, config.top_k, config.batch_size)))
                advance(len(part))
    return PredictionFile(output, writer.rows, writer.errors, time.perf_counter() - started)


def evaluate(
    model: str | Path | None = None,
    data: str | Path | None = None,
    *,
    config: EvaluateConfig | None = None,
    **options: Any,
) -> Evaluation:
    """Metrics on a labelled folder, written with ``predictions.csv`` and the plots to ``out``
    (default ``MODEL_DIR/eval-<data>``); the result says where (``.out``). Keywords or an
    ``EvaluateConfig``.

    Example
    -------
    >>> evaluation = evaluate("runs/demo", "examples/fashion-mini")  # doctest: +SKIP
    >>> evaluation.metrics["accuracy"], evaluation.out  # doctest: +SKIP
    (0.83, PosixPath('runs/demo/eval-fashion-mini'))
    """
    from ..evaluation.outputs import write_evaluation
    from ..fileio import write_json
    from ..inference.classifier import load
    from ..rundir import RunDir

    config = _config(EvaluateConfig, config, {"model": model and str(model), "data": data and str(data)}, options)
    validate_options(config)
    clf = load(config.model, **config.load_options())
    evaluation = clf.evaluate(config.data, batch_size=config.batch_size)
    e = evaluation
    e.out = Path(config.out) if config.out else clf.source.parent / f"eval-{Path(config.data).resolve().name}"
    write_json(e.out / RunDir.METRICS, e.metrics)
    write_evaluation(e.out, e.paths, e.y_true, e.probs, e.classes, e.metrics["confusion_matrix"], e.root)
    return e


def benchmark(model: str | Path | None = None, *, config: BenchmarkConfig | None = None, **options: Any) -> dict[str, Any]:
    """Latency (p50/p90) and throughput of a model on random images (decoding excluded).
    Keywords or a ``BenchmarkConfig``.

    Example
    -------
    >>> benchmark("runs/demo/export/model_int8.tflite", runs=50)["images_per_s"]  # doctest: +SKIP
    380.2
    """
    from ..inference.benchmark import benchmark as run_benchmark
    from ..inference.classifier import load

    config = _config(BenchmarkConfig, config, {"model": model and str(model)}, options)
    validate_options(config)
    return run_benchmark(load(config.model, **config.load_options()), runs=config.runs, batch=config.batch)
