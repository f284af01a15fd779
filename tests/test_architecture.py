"""The shape of the code that users and contributors rely on: importing imgclf changes
nothing in the process, options are declared once (the CLI is generated from the configs),
and old run configs still read."""

import dataclasses
import json
import subprocess
import sys

import pytest

from imgclf.cli import main

from .conftest import SAMPLE

IMPORT_EVERYTHING = """
import importlib, json, os, pkgutil, sys
import matplotlib
matplotlib.use("svg")   # a notebook's own backend choice
os.umask(0o027)
before = set(sys.modules)  # matplotlib brought NumPy in already
import imgclf
light = sorted(m for m in ("numpy", "tensorflow", "keras", "sklearn", "PIL") if m in set(sys.modules) - before)
for info in pkgutil.walk_packages(imgclf.__path__, "imgclf."):
    importlib.import_module(info.name)
from imgclf.evaluation.plots import plot_confusion_matrix
plot_confusion_matrix([[1, 0], [0, 1]], ["a", "b"], __import__("pathlib").Path(sys.argv[1]))
mask = os.umask(0); os.umask(mask)
print(json.dumps({
    "heavy_after_import_imgclf": light,
    "backend": matplotlib.get_backend(),
    "umask": mask,
    "foreign_modules": sorted(m for m in set(sys.modules) - before
                              if m.startswith("imgclf") and m.split(".")[1:2] == ["_mediapipe_schema"]),
}))
"""


def test_importing_imgclf_changes_nothing_in_the_process(tmp_path):
    r = subprocess.run(
        [sys.executable, "-c", IMPORT_EVERYTHING, str(tmp_path / "cm.png")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    seen = json.loads(r.stdout.strip().splitlines()[-1])
    assert seen["heavy_after_import_imgclf"] == []  # `import imgclf` stays instant
    assert seen["backend"] == "svg"  # plotting leaves the user's backend alone
    assert seen["umask"] == 0o027
    assert seen["foreign_modules"] == []
    assert (tmp_path / "cm.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "command, config_path",
    [
        ("train", "imgclf.training.config:TrainConfig"),
        ("export", "imgclf.exports.config:ExportConfig"),
        ("check", "imgclf.api:CheckConfig"),
        ("serve", "imgclf.serving.config:ServeConfig"),
        ("predict", "imgclf.api:PredictConfig"),
        ("evaluate", "imgclf.api:EvaluateConfig"),
        ("benchmark", "imgclf.api:BenchmarkConfig"),
    ],
)
def test_every_config_field_is_its_commands_option(command, config_path, capsys):
    import importlib

    from imgclf.options import cli_name, declared

    module, name = config_path.split(":")
    config = getattr(importlib.import_module(module), name)
    assert main([command, "--help"]) == 0
    shown = capsys.readouterr().out
    for field in declared(config):
        if field.metadata["argument"]:
            assert field.name.upper() in shown, field.name
        else:
            assert cli_name(field) in shown and field.metadata["help"][:20] in " ".join(shown.split()), field.name


@pytest.mark.parametrize(
    "options, message",
    [
        ({"augment": "wild"}, "--augment wild: unknown; choose from light, strong, off"),
        ({"epochs": 0}, "--epochs 0: must be a whole number >= 1"),
        ({"dropout": 1.0}, "--dropout 1.0: must be a fraction in [0, 1)"),
        ({"class_weight": "some"}, "--class-weight some: unknown; choose from auto, none"),
        ({"background": "plaid"}, "--background plaid"),
    ],
)
def test_python_and_cli_get_the_same_one_line_error(options, message, capsys, tmp_path):
    import imgclf
    from imgclf.options import cli_name

    with pytest.raises(imgclf.UsageError) as from_python:
        imgclf.TrainConfig(data=str(tmp_path), **options).validate()
    assert message in str(from_python.value)
    field = next(f for f in dataclasses.fields(imgclf.TrainConfig) if f.name in options)
    value = str(options[field.name])
    assert main(["train", str(tmp_path), cli_name(field), value]) == 2
    assert capsys.readouterr().err.strip() == f"imgclf: error: {from_python.value}"


def test_a_config_written_before_the_backbone_rename_still_reads(tmp_path, capsys):
    from imgclf.training.config import TrainConfig

    old = tmp_path / "config.json"
    old.write_text(json.dumps({"format": 1, "options": {"data": "photos", "model": "mobilenet_v2", "epochs": 7}}))
    config, record = TrainConfig.from_file(old)
    assert (config.backbone, config.epochs) == ("mobilenet_v2", 7)
    assert record["options"]["backbone"] == "mobilenet_v2"


def test_operations_take_a_config_object_or_keywords(tmp_path):
    import imgclf

    by_keywords = imgclf.check(str(SAMPLE), threshold=0.9)
    by_config = imgclf.check(config=imgclf.CheckConfig(data=str(SAMPLE), threshold=0.9))
    assert isinstance(by_config, imgclf.CheckResult)
    assert by_config.report.to_dict() | {"seconds": 0} == by_keywords.report.to_dict() | {"seconds": 0}
    with pytest.raises(imgclf.UsageError, match="--threshold 0: must be a fraction in \\(0, 1\\]"):
        imgclf.check(config=imgclf.CheckConfig(data=str(SAMPLE)), threshold=0)
    with pytest.raises(imgclf.UsageError, match="--quantize int4: unknown"):
        imgclf.export(config=imgclf.ExportConfig(run=str(tmp_path)), quantize="int4")
