"""A config.json is user input: wrong types, absurd values, deep nesting, a broken split or a
full disk get one line and exit code 2, never a traceback or a half-written file."""

import errno
import json

import pytest

from imgclf.cli import main
from imgclf.errors import DiskFullError
from imgclf.fileio import atomic_path

from .conftest import SAMPLE


def _config(tmp_path, **options):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"options": {"data": str(SAMPLE), **options}}))
    return path


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize(
    "value, says",
    [
        ("100", "'100': must be a whole number"),
        (2.5, "2.5: must be a whole number"),
        (1e30, "1e+30: must be a whole number"),
        (2**80, f"{2**80}: must be a whole number (at most 2147483647)"),
        (True, "True: must be a whole number"),
    ],
)
def test_config_values_of_the_wrong_type_or_range_are_refused(tmp_path, capsys, value, says):
    code = main(["train", "--config", str(_config(tmp_path, epochs=value)), "--out", str(tmp_path / "run")])
    assert code == 2 and f"--epochs {says}" in _one_line_error(capsys)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "options, says",
    [
        ({"preset": ["best"]}, "--preset ['best']: must be text"),
        ({"preset": "turbo"}, "--preset turbo: unknown; choose from fast, balanced, best"),
        ({"resize": {"crop": 1}}, "--resize {'crop': 1}: must be text"),
    ],
    ids=["preset-list", "preset-unknown", "resize-dict"],
)
def test_a_preset_or_resize_that_is_not_one_is_refused(tmp_path, capsys, options, says):
    code = main(["train", "--config", str(_config(tmp_path, **options)), "--out", str(tmp_path / "run")])
    assert code == 2 and says in _one_line_error(capsys)
    assert not (tmp_path / "run").exists()


def test_deeply_nested_json_is_refused(tmp_path, capsys):
    path = tmp_path / "config.json"
    path.write_text('{"options": ' + "[" * 100_000 + "]" * 100_000 + "}")
    assert main(["train", "--config", str(path)]) == 2
    assert "not JSON" in _one_line_error(capsys)


def _resumable_run(tmp_path, **changes):
    """An unfinished run's config.json, as `train` writes it, with ``changes`` applied."""
    run = tmp_path / "run"
    run.mkdir()
    record = {
        "format": 2, "status": "running", "options": {"data": str(SAMPLE), "out": str(run)},
        "backbone": {"name": "efficientnet_lite0", "input_size": 224}, "classes": ["bag", "shirt"],
        "dataset": {"root": str(SAMPLE), "layout": "presplit"},
        "splits": {"train": [["train/bag/00000.png", "bag"]], "val": [["train/shirt/00001.png", "shirt"]]},
    }
    for key, value in changes.items():
        record[key] = value
    (run / "config.json").write_text(json.dumps(record))
    return run


def test_a_resumed_split_that_names_an_unknown_class_is_refused(tmp_path, capsys):
    run = _resumable_run(tmp_path, splits={"train": [["train/bag/00000.png", "hat"]]})
    assert main(["--quiet", "train", "--resume", str(run)]) == 2
    err = _one_line_error(capsys)
    assert f"--resume {run}" in err and "['hat']" in err


@pytest.mark.parametrize("how", ["config", "resume"])
def test_a_background_that_is_not_a_colour_is_refused(tmp_path, capsys, how):
    if how == "config":
        args = ["train", "--config", str(_config(tmp_path, background="mauve-ish")), "--out", str(tmp_path / "o")]
    else:
        run = _resumable_run(tmp_path, options={"data": str(SAMPLE), "background": [999, 0]})
        args = ["--quiet", "train", "--resume", str(run)]
    assert main(args) == 2
    assert "--background" in _one_line_error(capsys)


def test_a_full_disk_while_saving_names_the_file_and_leaves_nothing(tmp_path):
    target = tmp_path / "run" / "model.keras"
    target.parent.mkdir()
    target.write_text("the previous model")

    with pytest.raises(DiskFullError, match=r"model\.keras: no space left on the device \(.* MB free in "):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert target.read_text() == "the previous model"
    assert [p.name for p in target.parent.iterdir()] == ["model.keras"]
