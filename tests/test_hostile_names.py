"""Names on disk are data, not instructions: odd bytes, line breaks, markup and escapes in
file and folder names never crash a command, never change what is printed, and never make
a run that cannot be used."""

import json
import os
import shutil

import pytest

from imgclf.cli import main
from imgclf.data.dataset import load_dataset
from imgclf.data.doctor import check_dataset
from imgclf.errors import DataError

from .conftest import COLORS, make_image

NOT_UTF8 = os.fsdecode(b"x\xff\xfe.png")  # what Python makes of a Latin-1 name on Linux


def test_a_file_name_that_is_not_utf8_is_skipped_with_a_warning_and_training_finishes(
    color_folders, tmp_path, capsys
):
    make_image(color_folders / "red" / NOT_UTF8, COLORS["red"], seed=999)
    ds = load_dataset(color_folders)
    assert sum(len(s) for s in ds.splits.values()) == 30
    assert any("not valid UTF-8" in w and "\\udcff" in w for w in ds.warnings)
    report = check_dataset(color_folders)
    assert any("not valid UTF-8" in i["reason"] for i in report.ignored)
    json.dumps(report.to_dict(), ensure_ascii=False).encode("utf-8")  # writable as check.json

    out = tmp_path / "run"
    code = main(["--quiet", "train", str(color_folders), "--out", str(out), "--epochs", "2", "--input-size", "64"])
    assert code == 0, capsys.readouterr().err
    assert (out / "model.keras").is_file() and json.loads((out / "check.json").read_text())
    assert "not valid UTF-8" in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["cat\nsecond", "cat ", " cat", "cat\u2028x", "cat\x1b[31m"])
def test_a_class_name_that_cannot_be_a_label_is_refused_naming_the_folder(color_folders, tmp_path, capsys, bad):
    shutil.move(color_folders / "red", color_folders / bad)
    with pytest.raises(DataError, match="cannot be a class name"):
        load_dataset(color_folders)
    report = check_dataset(color_folders)
    assert report.exit_code == 2 and [p.kind for p in report.problems if p.severity == "fatal"] == ["bad_class_name"]
    code = main(["--quiet", "train", str(color_folders), "--out", str(tmp_path / "run"), "--input-size", "64"])
    err = capsys.readouterr().err
    assert code == 2 and "cannot be a class name" in err and "rename it" in err
    assert len(err.strip().splitlines()) == 1 and "\x1b" not in err
    assert not (tmp_path / "run").exists()


def test_markup_and_terminal_escapes_in_names_are_printed_as_written(color_folders, capsys):
    shutil.move(color_folders / "red", color_folders / "red[")  # images in red[/]: Rich markup that crashed `check`
    shutil.move(color_folders / "green", color_folders / "[bold]green")  # markup that restyled the table
    bad = color_folders / "red[" / "]" / "\x1b[2Jcleared.png"  # ANSI: clears the screen
    bad.parent.mkdir()
    bad.write_bytes(b"not an image")
    code = main(["check", str(color_folders)])
    out, err = capsys.readouterr()
    assert code == 1, err  # a warning (an unreadable file), not a crash
    assert "[bold]green" in out and "red[/]/\\x1b[2Jcleared.png" in out
    assert "\x1b" not in out + err


def test_warnings_and_errors_escape_control_characters(tmp_path, capsys):
    from imgclf.progress import Reporter

    Reporter().warn("file \x1b]0;pwned\x07 [red]x[/red]")
    missing = tmp_path / "no\x1b[31mpe"
    code = main(["--quiet", "check", str(missing)])
    err = capsys.readouterr().err
    assert code == 2 and "\x1b" not in err and "\x07" not in err
    assert "[red]x[/red]" in err and "\\x1b[31m" in err
