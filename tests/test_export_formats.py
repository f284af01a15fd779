"""ONNX and OpenVINO exports: each converts the sample run, loads in its own runtime,
matches the Keras model, says its labels and preprocessing to a third-party reader, and
runs through predict, evaluate, benchmark and serve like the other formats."""

import json
import shutil
import sys

import numpy as np
import pytest

import imgclf
from imgclf.cli import main
from imgclf.errors import ModelError, UsageError
from imgclf.exports.config import ExportConfig
from imgclf.rundir import RunDir

from .conftest import SAMPLE

TEST_IMAGES = sorted((SAMPLE / "test").rglob("*.png"))
# The .tflite int8's target in test_export.py (the sample's int8 agreement is ~0.94).
INT8_AGREEMENT = 0.9
FILES = {
    "onnx float32": "model_float32.onnx",
    "onnx int8": "model_int8.onnx",
    "openvino float32": "openvino/model_float32.xml",
    "openvino int8": "openvino/model_int8.xml",
}


@pytest.fixture(scope="module")
def keras_probs(trained_run):
    probs, errors = imgclf.load(trained_run.run_dir).predict_proba(TEST_IMAGES)
    assert not errors
    return probs


@pytest.mark.parametrize("name", FILES)
def test_each_format_matches_the_keras_model_in_its_own_runtime(exported, keras_probs, name):
    out, report = exported
    clf = imgclf.load(out / FILES[name])
    assert clf.format == name.split()[0]
    assert RunDir.containing(out / FILES[name]).path == out.parent  # the run's framing and metrics apply
    assert clf.classes == imgclf.load(out.parent).classes
    probs, errors = clf.predict_proba(TEST_IMAGES)
    assert not errors
    agreement = (probs.argmax(1) == keras_probs.argmax(1)).mean()
    if name.endswith("float32"):
        assert agreement == 1.0 and np.abs(probs - keras_probs).max() < 1e-4
    else:
        assert agreement >= INT8_AGREEMENT
        labels = np.array([clf.classes.index(p.parent.name) for p in TEST_IMAGES])
        keras_accuracy = (keras_probs.argmax(1) == labels).mean()
        assert (probs.argmax(1) == labels).mean() >= keras_accuracy - 0.05
    variant = next(v for v in report["variants"] if v["name"] == name)
    assert variant["accuracy"]["test"] == pytest.approx((probs.argmax(1) == np.array(
        [clf.classes.index(p.parent.name) for p in TEST_IMAGES])).mean(), abs=1e-9)
    assert variant["latency_ms"]["p50"] > 0 and variant["bytes"] > 1_000_000


def test_quantized_files_are_smaller(exported):
    _, report = exported
    size = {v["name"]: v["bytes"] for v in report["variants"]}
    assert size["onnx int8"] < 0.35 * size["onnx float32"]
    assert size["openvino int8"] < 0.35 * size["openvino float32"]


def test_parity_rows_reach_report_md_and_the_html_report(exported):
    out, _ = exported
    markdown, html = (out / "report.md").read_text(), (out.parent / "report.html").read_text()
    for name in FILES:
        assert f"| {name} |" in markdown
        assert f"<td>{name}</td>" in html


def test_onnx_metadata_tells_a_third_party_reader_everything(exported, tmp_path):
    """Plain onnx sees the labels, input and preprocessing; a lone .onnx loads with its labels."""
    import onnx

    out, report = exported
    classes = imgclf.load(out.parent).classes
    for precision in ("float32", "int8"):
        proto = onnx.load(str(out / f"model_{precision}.onnx"))
        props = {p.key: p.value for p in proto.metadata_props}
        assert json.loads(props["labels"]) == classes
        assert props["resize"] == "squash" and props["input_size"] == "224"
        assert "RGB pixels 0..255" in props["input"] and "not normalized" in props["input"]
        assert float(props["unknown_threshold"]) == pytest.approx(report["unknown_threshold"], abs=1e-6)
        assert [i.name for i in proto.graph.input] == ["image"]
        assert [o.name for o in proto.graph.output] == ["probabilities"]
        assert proto.producer_name == "imgclf"
        alone = tmp_path / f"alone_{precision}.onnx"  # no labels.txt beside it
        shutil.copy(out / f"model_{precision}.onnx", alone)
        assert imgclf.load(alone).classes == classes


def test_onnx_int8_weights_fit_in_7_bits(exported):
    """ONNX Runtime's uint8 x int8 kernel on AVX2 without VNNI sums pairs of products in int16
    and saturates with full 8-bit weights: on such a CPU (an AMD EPYC) the sample's onnx int8
    agreed with Keras on 87 % of images instead of 96 %. The file is quantized for any CPU."""
    import onnx
    from onnx import numpy_helper

    out, _ = exported
    graph = onnx.load(str(out / "model_int8.onnx")).graph
    initializers = {i.name: i for i in graph.initializer}
    weights = [
        numpy_helper.to_array(initializers[node.input[0]])
        for node in graph.node
        if node.op_type == "DequantizeLinear" and node.input[0] in initializers
        and initializers[node.input[0]].data_type == onnx.TensorProto.INT8
    ]
    assert len(weights) >= 30  # every conv and the head
    assert max(int(np.abs(w.astype(np.int16)).max()) for w in weights) <= 64


def test_openvino_rt_info_carries_the_labels(exported, tmp_path):
    import openvino as ov

    out, _ = exported
    classes = imgclf.load(out.parent).classes
    model = ov.Core().read_model(str(out / "openvino" / "model_int8.xml"))
    assert json.loads(model.get_rt_info(["imgclf", "labels"]).astype(str)) == classes
    assert (out / "openvino" / "labels.txt").read_text().split() == classes
    alone = tmp_path / "ir"
    alone.mkdir()
    for suffix in (".xml", ".bin"):
        shutil.copy(out / "openvino" / f"model_float32{suffix}", alone / f"m{suffix}")
    assert imgclf.load(alone / "m.xml").classes == classes
    assert not [p.name for p in (out / "openvino").iterdir() if p.name.startswith(".") or p.stem == "keras"]


@pytest.mark.parametrize("name", ["onnx int8", "openvino float32"])
def test_cli_predict_evaluate_benchmark(exported, capsys, name):
    out, report = exported
    model = str(out / FILES[name])
    assert main(["predict", model, str(TEST_IMAGES[0]), "--format", "json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result[0]["predictions"][0]["label"] == imgclf.load(model).predict([TEST_IMAGES[0]])[0]["predictions"][0]["label"]
    assert main(["benchmark", model, "--runs", "3", "--threads", "1"]) == 0
    assert f"format: {name.split()[0]}" in capsys.readouterr().out
    evaluated = out.parent / f"eval-{name.replace(' ', '-')}"
    assert main(["evaluate", model, str(SAMPLE), "--out", str(evaluated)]) == 0
    accuracy = json.loads((evaluated / "metrics.json").read_text())["accuracy"]
    assert accuracy == pytest.approx(next(v for v in report["variants"] if v["name"] == name)["accuracy"]["test"])


def test_serve_answers_from_an_onnx_model(exported):
    from fastapi.testclient import TestClient

    from imgclf.serving.app import create_app

    out, report = exported
    model = out / "model_float32.onnx"
    with TestClient(create_app(model, workers=2)) as client:
        summary = client.get("/v1/model").json()
        assert summary["format"] == "onnx" and summary["export"]["precision"] == "float32"
        assert summary["export"]["agreement_with_keras"] == 1.0
        answer = client.post("/v1/classify", files={"file": ("a.png", TEST_IMAGES[0].read_bytes(), "image/png")})
    assert answer.status_code == 200
    expected = imgclf.load(model).predict([TEST_IMAGES[0]])[0]["predictions"][0]
    assert answer.json()["predictions"][0]["label"] == expected["label"]


def test_a_format_without_its_extra_says_which_to_install(trained_run, monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tf2onnx" else real(name, *a))
    with pytest.raises(UsageError, match=r"--format onnx needs tf2onnx: pip install 'imgclf\[onnx\]'"):
        ExportConfig(run=str(trained_run.run_dir), formats=["onnx"]).validate()
    assert main(["export", str(trained_run.run_dir), "--format", "onnx"]) == 2
    assert "imgclf[onnx]" in capsys.readouterr().err


def test_running_an_onnx_model_without_onnxruntime(exported, monkeypatch):
    out, _ = exported
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    with pytest.raises(UsageError, match=r"pip install 'imgclf\[onnx\]'"):
        imgclf.load(out / "model_float32.onnx")


def test_a_precision_the_format_lacks_is_refused(trained_run):
    with pytest.raises(UsageError, match="--format onnx is written in float32 or int8"):
        ExportConfig(run=str(trained_run.run_dir), formats=["onnx"], quantize=["float16"]).validate()


def _tiny_onnx(**metadata):
    """A valid ONNX classifier-shaped model: [n, 4, 4, 3] -> [n, 2] (the first two channels' means)."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["image"], ["m"], axes=[1, 2], keepdims=0),
            helper.make_node("Slice", ["m", "s", "e", "a"], ["probabilities"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", 4, 4, 3])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["n", 2])],
        [helper.make_tensor(n, TensorProto.INT64, [1], [v]) for n, v in (("s", 0), ("e", 2), ("a", 1))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    return model


def test_hostile_onnx_files_are_clean_errors(tmp_path):
    import onnx

    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07" + b"\xff" * 500)
    with pytest.raises(ModelError, match="garbage.onnx: not a usable ONNX model"):
        imgclf.load(garbage)

    bad_labels = tmp_path / "bad_labels.onnx"
    onnx.save(_tiny_onnx(labels='{"not": "a list"}'), str(bad_labels))
    with pytest.raises(ModelError, match="not a JSON list of strings"):
        imgclf.load(bad_labels)

    good = tmp_path / "tiny.onnx"
    onnx.save(_tiny_onnx(labels='["a", "b"]'), str(good))
    assert imgclf.load(good).classes == ["a", "b"]

    # An initializer whose bytes live in "external data" outside the model's folder: the
    # model is handed to ONNX Runtime as bytes, so no file is ever read for it.
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.arange(2, dtype=np.int64).tobytes())
    model = _tiny_onnx(labels='["a", "b"]')
    starts = model.graph.initializer[0]
    starts.ClearField("int64_data")
    starts.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", str(secret)), ("offset", "0"), ("length", "8")):
        entry = starts.external_data.add()
        entry.key, entry.value = key, value
    sneaky = tmp_path / "models" / "sneaky.onnx"
    sneaky.parent.mkdir()
    sneaky.write_bytes(model.SerializeToString())
    with pytest.raises(ModelError, match="sneaky.onnx: not a usable ONNX model"):
        imgclf.load(sneaky)


def test_an_onnx_model_that_is_not_a_classifier(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
    )
    path = tmp_path / "vector.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    with pytest.raises(ModelError, match=r"vector.onnx: not an image classifier \(inputs \[\[1, 8\]\]"):
        imgclf.load(path, labels=None)


def test_hostile_openvino_files_are_clean_errors(exported, tmp_path):
    out, _ = exported
    garbage = tmp_path / "garbage.xml"
    garbage.write_text("<net><layers><layer id='0' type='Parameter'/></layers></net>")
    with pytest.raises(ModelError, match="garbage.xml: not a usable OpenVINO model"):
        imgclf.load(garbage)
    orphan = tmp_path / "orphan.xml"  # its weights file is missing
    shutil.copy(out / "openvino" / "model_float32.xml", orphan)
    with pytest.raises(ModelError, match="orphan.xml: not a usable OpenVINO model"):
        imgclf.load(orphan)


def test_int8_heads_are_refitted_like_the_tflite_one(exported, trained_run, tmp_path):
    """--int8-head refit (the default) re-fits the ONNX and OpenVINO int8 heads on their own
    int8 backbone's features, as for the .tflite; keep leaves the trained head. Which is more
    accurate shows at scale, not on 280 images (BENCHMARKS.md, the export section)."""
    out, report = exported
    kept = imgclf.export(
        trained_run.run_dir, formats=["onnx", "openvino"], quantize=["int8"], int8_head="keep",
        out=str(tmp_path / "keep"), latency_runs=1,
    ).report
    for name in ("onnx int8", "openvino int8"):
        refit = next(v for v in report["variants"] if v["name"] == name)
        keep = next(v for v in kept["variants"] if v["name"] == name)
        assert refit["head"].startswith("re-fitted") and keep["head"] == "as trained"
        assert keep["agreement"] >= INT8_AGREEMENT and refit["agreement"] >= INT8_AGREEMENT
    refit_probs, _ = imgclf.load(out / "model_int8.onnx").predict_proba(TEST_IMAGES)
    keep_probs, _ = imgclf.load(tmp_path / "keep" / "model_int8.onnx").predict_proba(TEST_IMAGES)
    assert np.abs(refit_probs - keep_probs).max() > 1e-3  # another head, not the same file twice
