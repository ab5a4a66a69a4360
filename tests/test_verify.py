import json
import xml.etree.ElementTree as ET

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

from rnascl_deploy.cli import main
from rnascl_deploy.exporters import export_student
from rnascl_deploy.exporters.onnx_export import export_onnx
from rnascl_deploy.models import build_model
from rnascl_deploy.recipe import load_recipe


def _verify(run, engine, *extra):
    return CliRunner().invoke(main, ["-q", "verify", str(run), "--engine", str(engine), "--limit", "100", *extra])


@pytest.fixture(scope="module")
def engines(trained_run):
    recipe = load_recipe(trained_run / "recipe.yaml")
    for fmt in ("onnx", "onnx-int8"):
        export_student(trained_run, fmt, recipe)
    return trained_run / "engines"


def test_fp32_engine_passes_with_reports(trained_run, engines, tmp_path):
    result = _verify(trained_run, engines / "student.onnx", "--json", "--junit", str(tmp_path / "j.xml"))
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["passed"] and report["agreement"] == 1.0 and report["n"] == 100
    assert report["clean_acc"] > 0.6 and set(report["adv_acc"]) == {"pgd20", "apgd_ce", "square"}
    assert report["reference"]["adv_acc"]["pgd20"] <= report["reference"]["clean_acc"]
    suite = ET.parse(tmp_path / "j.xml").getroot()
    assert suite.get("failures") == "0" and int(suite.get("tests")) == len(report["checks"])
    assert (trained_run / "verify" / "student.onnx.md").read_text().startswith("# Verification: PASS")


def test_int8_engine_is_attacked_with_the_hybrid_attack(trained_run, engines):
    result = _verify(trained_run, engines / "student-int8.onnx", "--json")
    report = json.loads(result.output)
    assert "hybrid_pgd20" in report["adv_acc"] and report["engine"]["precision"] == "int8"
    assert result.exit_code == (0 if report["passed"] else 1)


def test_damaged_engine_fails_with_exit_1(trained_run, engines, tmp_path):
    model = onnx.load(str(engines / "student.onnx"))
    rng = np.random.default_rng(0)
    for init in model.graph.initializer:
        w = numpy_helper.to_array(init)
        if w.ndim == 4 and w.dtype == np.float32:
            init.CopyFrom(numpy_helper.from_array(w + rng.normal(0, 0.5 * w.std(), w.shape).astype(np.float32),
                                                  init.name))
    onnx.save(model, str(tmp_path / "damaged.onnx"))
    result = _verify(trained_run, tmp_path / "damaged.onnx")
    assert result.exit_code == 1 and "FAIL" in result.output


def test_another_models_engine_fails_and_a_wrong_shape_is_a_usage_error(trained_run, tmp_path):
    other = build_model("cnn", 1, 10, 28, [0.3], [0.3], widths=[4], strides=[2], hidden=8)
    export_onnx(other, (1, 28, 28), tmp_path / "other.onnx")
    assert _verify(trained_run, tmp_path / "other.onnx").exit_code == 1
    rgb = build_model("cnn", 3, 10, 32, [0.3] * 3, [0.3] * 3, widths=[4], strides=[2], hidden=8)
    export_onnx(rgb, (3, 32, 32), tmp_path / "rgb.onnx")
    result = _verify(trained_run, tmp_path / "rgb.onnx")
    assert result.exit_code == 2 and "not an engine of this model" in result.output
