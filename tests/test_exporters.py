import json

import onnx
import pytest
import torch
from click.testing import CliRunner

from rnascl_deploy.checkpoint import load_model
from rnascl_deploy.data import batches, load_split
from rnascl_deploy.cli import main
from rnascl_deploy.engines import OnnxRuntimeEngine, TorchEngine, open_engine
from rnascl_deploy.errors import RnasclError
from rnascl_deploy.exporters import export_student
from rnascl_deploy.recipe import load_recipe


@pytest.fixture(scope="module")
def exported(trained_run):
    recipe = load_recipe(trained_run / "recipe.yaml")
    return {fmt: export_student(trained_run, fmt, recipe) for fmt in ("onnx", "onnx-fp16", "onnx-int8")}


def test_fp32_onnx_matches_pytorch_and_is_one_checked_file_with_dynamic_batch(trained_run, exported):
    result = exported["onnx"]
    assert result.max_abs_diff <= 1e-4 and result.n == 256
    path = trained_run / "engines" / "student.onnx"
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version >= 18 and not list((trained_run / "engines").glob("*.data"))
    student, meta = load_model(trained_run / "student.safetensors")
    engine = open_engine(path)
    for batch in (1, 37):
        x = torch.rand(batch, 1, 28, 28)
        assert torch.allclose(engine(x), TorchEngine(student, [1, 28, 28], 10)(x), atol=1e-4)
    side = json.loads((trained_run / "engines" / "student.onnx.json").read_text())
    assert side["precision"] == "fp32" and side["input_shape"] == [1, 28, 28] and side["num_classes"] == 10


def test_fp16_and_int8_graphs(trained_run, exported):
    assert exported["onnx-fp16"].max_abs_diff < 0.05  # logits of magnitude ~10
    student, _ = load_model(trained_run / "student.safetensors")
    test, _ = load_split("fashion-mnist", "test", limit=500)
    x = torch.cat([b for b, _ in batches(test, 500)])
    accuracy = (TorchEngine(student, [1, 28, 28], 10)(x).argmax(1) == test.labels).float().mean()
    for name, max_drop in (("student-fp16.onnx", 0.002), ("student-int8.onnx", 0.03)):
        engine_accuracy = (open_engine(trained_run / "engines" / name)(x).argmax(1) == test.labels).float().mean()
        assert engine_accuracy >= accuracy - max_drop, (name, float(accuracy), float(engine_accuracy))
    int8 = onnx.load(str(trained_run / "engines" / "student-int8.onnx"))
    ops = {n.op_type for n in int8.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    engine = OnnxRuntimeEngine(trained_run / "engines" / "student-int8.onnx")
    assert engine.precision == "int8" and engine.input_shape == [1, 28, 28] and engine.num_classes == 10
    fp16 = onnx.load(str(trained_run / "engines" / "student-fp16.onnx"))
    assert fp16.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # float32 images in


def test_tensorrt_without_tensorrt_is_a_clear_error(trained_run):
    result = CliRunner().invoke(main, ["-q", "export", str(trained_run), "--format", "tensorrt-int8"])
    assert result.exit_code == 2 and "TensorRT" in result.output


def test_engines_refuse_bad_files(tmp_path):
    (tmp_path / "x.onnx").write_bytes(b"not onnx")
    with pytest.raises(RnasclError, match="onnxruntime cannot load"):
        open_engine(tmp_path / "x.onnx")
    with pytest.raises(RnasclError, match="unknown engine type"):
        (tmp_path / "x.bin").write_bytes(b"")
        open_engine(tmp_path / "x.bin")
    with pytest.raises(RnasclError, match="not found"):
        open_engine(tmp_path / "absent.onnx")
