import importlib.util
import json
from pathlib import Path

import onnx
import onnx.numpy_helper
import pytest
import torch
from click.testing import CliRunner

from rnascl_deploy.checkpoint import file_sha256, load_model
from rnascl_deploy.cli import main
from rnascl_deploy.data import batches, load_split
from rnascl_deploy.engines import OnnxRuntimeEngine, TorchEngine, open_engine
from rnascl_deploy.errors import RnasclError
from rnascl_deploy.exporters.export import export_student
from rnascl_deploy.exporters.provenance import UntrustedEngine, check_provenance, onnx_precision
from rnascl_deploy.recipe import load_recipe

HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None
HAS_GPU_TENSORRT = HAS_TENSORRT and torch.cuda.is_available()


def fresh_run(trained_run: Path, dst: Path) -> Path:
    """A copy of the trained run without engines: tests that break engines on purpose do it here."""
    dst.mkdir()
    for f in trained_run.iterdir():
        if f.is_file():
            (dst / f.name).write_bytes(f.read_bytes())
    return dst


def integer_biases(model: onnx.ModelProto) -> list:
    """Conv/Gemm biases that reach their node through a DequantizeLinear of an integer tensor, found by walking
    the graph from each bias input back to its producer (the failure TensorRT's ONNX parser reports)."""
    producers = {out: node for node in model.graph.node for out in node.output}
    inits = {t.name: t for t in model.graph.initializer}
    integer = {onnx.TensorProto.INT32, onnx.TensorProto.INT64, onnx.TensorProto.INT16, onnx.TensorProto.UINT8,
               onnx.TensorProto.INT8}
    found = []
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm") or len(node.input) < 3 or not node.input[2]:
            continue
        producer = producers.get(node.input[2])
        if producer is not None and producer.op_type == "DequantizeLinear":
            source = inits.get(producer.input[0])
            if source is not None and source.data_type in integer:
                found.append((node.name, onnx.TensorProto.DataType.Name(source.data_type)))
    return found


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
    assert side["engine_sha256"] == file_sha256(path)
    assert side["student_sha256"] == file_sha256(trained_run / "student.safetensors")


def test_every_onnx_file_describes_itself_in_its_metadata(trained_run, exported):
    import onnxruntime as ort

    from rnascl_deploy.exporters.metadata import read_metadata

    recipe = load_recipe(trained_run / "recipe.yaml")
    sha = file_sha256(trained_run / "student.safetensors")
    for fmt, precision in (("onnx", "fp32"), ("onnx-fp16", "fp16"), ("onnx-int8", "int8")):
        path = Path(exported[fmt].path)
        meta = read_metadata(path)
        assert meta["precision"] == precision and meta["student_sha256"] == sha and meta["dataset"] == "fashion-mnist"
        assert meta["class_names"][0] == "T-shirt/top" and len(meta["class_names"]) == 10
        assert meta["input"] == {"name": "images", "layout": "NCHW", "shape": [1, 28, 28], "range": [0, 1],
                                 "dtype": "float32"}
        assert meta["normalization"]["in_graph"] is True and meta["threat_model"]["eps"] == recipe.attack.eps
        assert meta["producer"].startswith("rnascl-deploy ")
        custom = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_modelmeta()
        assert json.loads(custom.custom_metadata_map["class_names"]) == meta["class_names"]  # what a user reads


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


def _zero_points(path):
    """The element type and values of every QuantizeLinear's zero point in the graph at ``path``."""
    graph = onnx.load(str(path)).graph
    inits = {t.name: t for t in graph.initializer}
    points = [inits[n.input[2]] for n in graph.node if n.op_type == "QuantizeLinear" and len(n.input) > 2]
    return {onnx.TensorProto.DataType.Name(t.data_type) for t in points}, \
        {int(v) for t in points for v in onnx.numpy_helper.to_array(t).ravel()}


def test_onnxruntimes_int8_graph_has_uint8_activations_and_tensorrts_symmetric_int8(trained_run, exported):
    types, _ = _zero_points(trained_run / "engines" / "student-int8.onnx")
    assert types == {"UINT8"}  # U8S8: faster on AVX2 (docs/export.md, "INT8 on CPU")
    export_student(trained_run, "tensorrt-int8", load_recipe(trained_run / "recipe.yaml"), onnx_only=True)
    types, values = _zero_points(trained_run / "engines" / "student-int8.trt.onnx")
    assert types == {"INT8"} and values == {0}  # TensorRT takes only zero points of 0


def test_int8_activations_key_writes_s8s8(trained_run, tmp_path):
    recipe = load_recipe(trained_run / "recipe.yaml", {"export.int8_activations": "s8"})
    run = fresh_run(trained_run, tmp_path / "run")
    export_student(run, "onnx-int8", recipe)
    types, values = _zero_points(run / "engines" / "student-int8.onnx")
    assert types == {"INT8"} and values == {0}


def test_precision_is_read_from_each_graph_and_every_sidecar_describes_its_file(trained_run, exported):
    for fmt, precision in (("onnx", "fp32"), ("onnx-fp16", "fp16"), ("onnx-int8", "int8")):
        path = Path(exported[fmt].path)
        assert onnx_precision(path) == precision == open_engine(path).precision
        assert check_provenance(path, file_sha256(trained_run / "student.safetensors"))["precision"] == precision


def test_tensorrt_int8_onnx_only_writes_the_graph_tensorrt_gets_with_float_biases(trained_run, exported):
    recipe = load_recipe(trained_run / "recipe.yaml")
    result = export_student(trained_run, "tensorrt-int8", recipe, onnx_only=True)
    path = trained_run / "engines" / "student-int8.trt.onnx"
    assert result.onnx_only and Path(result.path) == path and result.precision == "int8"
    assert not (trained_run / "engines" / "student-int8.engine").exists()
    graph = onnx.load(str(path))
    onnx.checker.check_model(graph, full_check=True)
    # The walk is a real detector: onnxruntime's own INT8 graph has INT32 biases behind DequantizeLinear.
    ort_graph = onnx.load(str(trained_run / "engines" / "student-int8.onnx"))
    assert integer_biases(ort_graph) and {t for _, t in integer_biases(ort_graph)} == {"INT32"}
    assert integer_biases(graph) == []
    # ...and the TensorRT graph is still quantised: INT8 weights behind DequantizeLinear feed a Conv.
    producers = {out: node for node in graph.graph.node for out in node.output}
    inits = {t.name: t.data_type for t in graph.graph.initializer}
    quantised_convs = [n for n in graph.graph.node if n.op_type == "Conv" and n.input[1] in producers
                       and producers[n.input[1]].op_type == "DequantizeLinear"
                       and inits.get(producers[n.input[1]].input[0]) == onnx.TensorProto.INT8]
    assert quantised_convs
    side = check_provenance(path, file_sha256(trained_run / "student.safetensors"))
    assert side["format"] == "tensorrt-int8-onnx" and side["precision"] == "int8"
    assert result.max_abs_diff == side["max_abs_diff"] < 1.0  # onnxruntime runs the same graph: logit parity
    assert side["parity_graph_optimizations"] == "off"  # as written, not through x86's fused INT8 kernels
    again = export_student(trained_run, "tensorrt-int8", recipe, onnx_only=True)
    assert again.skipped and again.path == result.path


def test_tensorrt_fp16_onnx_only_is_an_fp16_graph(trained_run, exported):
    result = export_student(trained_run, "tensorrt-fp16", load_recipe(trained_run / "recipe.yaml"), onnx_only=True)
    assert Path(result.path).name == "student-fp16.trt.onnx" and onnx_precision(result.path) == "fp16"
    assert result.max_abs_diff < 0.05 and not (trained_run / "engines" / "student-fp16.engine").exists()


@pytest.mark.skipif(HAS_TENSORRT, reason="TensorRT is importable here: the refusal is for machines without it")
def test_tensorrt_without_tensorrt_is_a_clear_refusal_before_any_work(trained_run, tmp_path):
    run = fresh_run(trained_run, tmp_path / "run")
    result = CliRunner().invoke(main, ["-q", "export", str(run), "--format", "tensorrt-int8"])
    assert result.exit_code == 2 and "TensorRT" in result.output and "rnascl-deploy[gpu]" in result.output
    assert "Traceback" not in result.output and not (run / "engines").exists()
    with pytest.raises(RnasclError, match="--onnx-only"):
        export_student(run, "tensorrt-fp16", load_recipe(run / "recipe.yaml"))


@pytest.mark.skipif(not HAS_GPU_TENSORRT, reason="needs TensorRT and a CUDA GPU (none on the project's CPU hosts)")
def test_tensorrt_engines_build_run_and_record_where_they_were_built(trained_run, tmp_path):
    from rnascl_deploy.bench import bench

    run = fresh_run(trained_run, tmp_path / "run")
    recipe = load_recipe(run / "recipe.yaml")
    recipe.export.max_batch, recipe.export.opt_batch = 64, 8
    for fmt, bound in (("tensorrt-fp16", 0.05), ("tensorrt-int8", 1.0)):
        result = export_student(run, fmt, recipe)
        assert result.max_abs_diff < bound, (fmt, result.max_abs_diff)
        side = check_provenance(Path(result.path), file_sha256(run / "student.safetensors"))
        trt = side["tensorrt"]
        assert trt["version"] and trt["gpu"] and trt["compute_capability"] and trt["max_batch"] == 64
        engine = open_engine(result.path)
        assert (engine.min_batch, engine.max_batch, engine.precision) == (1, 64, side["precision"])
        assert engine(torch.rand(100, 1, 28, 28)).shape == (100, 10)  # split into calls the profile takes
        # images still being written on the caller's stream when they are handed over (a long kernel queued before
        # them), and a slice of a batch that is not 256-byte aligned: the engine waits for them and copes
        x = torch.rand(64, 1, 28, 28)
        expected = engine.run(x)
        big = torch.rand(4096, 4096, device="cuda")
        for _ in range(8):
            big = big @ big / 4096  # keeps the default stream busy
        on_gpu = torch.zeros(65, 1, 28, 28, device="cuda")
        on_gpu[1:] = x.cuda()
        assert torch.allclose(engine.run(on_gpu[1:]), expected, atol=1e-3)
        with pytest.raises(RnasclError, match="1..64"):
            engine.run(torch.rand(65, 1, 28, 28))
        with pytest.raises(RnasclError, match="1..64"):
            bench(engine, [128], warmup=0, min_iters=1, min_seconds=0)
        built = json.loads(Path(result.path + ".json").read_text())
        built["tensorrt"]["version"] = "0.0.1"
        built_elsewhere = tmp_path / Path(result.path).name
        built_elsewhere.write_bytes(Path(result.path).read_bytes())
        Path(str(built_elsewhere) + ".json").write_text(json.dumps(built))
        with pytest.raises(RnasclError, match="built elsewhere"):
            open_engine(built_elsewhere)


def test_an_interrupted_export_is_redone_without_force(trained_run, tmp_path, monkeypatch):
    import rnascl_deploy.exporters.export as exporters

    run = fresh_run(trained_run, tmp_path / "run")
    recipe = load_recipe(run / "recipe.yaml")
    engine = run / "engines" / "student.onnx"
    real = exporters.atomic_write_json

    def killed_after_the_sidecar(path, obj):  # the process dies between the sidecar and the engine's rename
        real(path, obj)
        raise KeyboardInterrupt

    monkeypatch.setattr(exporters, "atomic_write_json", killed_after_the_sidecar)
    with pytest.raises(KeyboardInterrupt):
        export_student(run, "onnx", recipe)
    monkeypatch.undo()
    # A sidecar for an engine that never landed, and no temporary file left behind.
    assert not engine.exists() and (run / "engines" / "student.onnx.json").exists()
    assert not list((run / "engines").glob(".*.tmp"))
    recipe.export.opset = 19  # an engine whose bytes differ from the one the next interrupted export writes
    first = export_student(run, "onnx", recipe)
    assert not first.skipped
    old = file_sha256(engine)
    recipe.export.opset = 18
    monkeypatch.setattr(exporters, "atomic_write_json", killed_after_the_sidecar)
    with pytest.raises(KeyboardInterrupt):
        export_student(run, "onnx", recipe, force=True)
    monkeypatch.undo()
    # The old engine is still in place, but the sidecar now describes the file that never landed: not trusted.
    assert file_sha256(engine) == old
    with pytest.raises(UntrustedEngine, match="not the file its sidecar describes"):
        check_provenance(engine)
    redone = export_student(run, "onnx", recipe)  # no force needed: it was not a finished export
    assert not redone.skipped and check_provenance(engine)["max_abs_diff"] == redone.max_abs_diff
    assert onnx.load(str(engine)).opset_import[0].version == 18
    # An engine with no sidecar, or a malformed one, is not a finished export either: redone, never a traceback.
    (run / "engines" / "student.onnx.json").unlink()
    assert not export_student(run, "onnx", recipe).skipped
    (run / "engines" / "student.onnx.json").write_text("{not json")
    assert not export_student(run, "onnx", recipe).skipped
    assert export_student(run, "onnx", recipe).skipped


def test_another_students_engine_is_replaced_only_with_force(trained_run, tmp_path):
    run = fresh_run(trained_run, tmp_path / "run")
    recipe = load_recipe(run / "recipe.yaml")
    export_student(run, "onnx", recipe)
    side_path = run / "engines" / "student.onnx.json"
    side = json.loads(side_path.read_text())
    side["student_sha256"] = "0" * 64
    side_path.write_text(json.dumps(side))
    with pytest.raises(RnasclError, match="another student"):
        export_student(run, "onnx", recipe)
    assert not export_student(run, "onnx", recipe, force=True).skipped


def test_a_tensorrt_build_keeps_another_students_graph_unless_forced(trained_run, tmp_path, monkeypatch):
    import rnascl_deploy.exporters.tensorrt as tensorrt_module

    run = fresh_run(trained_run, tmp_path / "run")
    recipe = load_recipe(run / "recipe.yaml")
    export_student(run, "tensorrt-int8", recipe, onnx_only=True)
    side_path = run / "engines" / "student-int8.trt.onnx.json"
    side = json.loads(side_path.read_text())
    side["student_sha256"] = "0" * 64  # as if written from the student before a retrain
    side_path.write_text(json.dumps(side))
    before = (run / "engines" / "student-int8.trt.onnx").read_bytes()
    monkeypatch.setattr(tensorrt_module, "require_tensorrt", lambda: None)  # as on a GPU with TensorRT: the refusal
    with pytest.raises(RnasclError, match="another student"):  # comes before the graph is regenerated
        export_student(run, "tensorrt-int8", recipe)
    assert (run / "engines" / "student-int8.trt.onnx").read_bytes() == before


def test_engines_refuse_bad_files(tmp_path):
    (tmp_path / "x.onnx").write_bytes(b"not onnx")
    with pytest.raises(RnasclError, match="onnxruntime cannot load"):
        open_engine(tmp_path / "x.onnx")
    with pytest.raises(RnasclError, match="unknown engine type"):
        (tmp_path / "x.bin").write_bytes(b"")
        open_engine(tmp_path / "x.bin")
    with pytest.raises(RnasclError, match="not found"):
        open_engine(tmp_path / "absent.onnx")
    from onnx import TensorProto, helper
    images = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 1, 28, 28]) for n in ("a", "b")]
    logits = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 28, 28])
    two_inputs = helper.make_model(helper.make_graph([helper.make_node("Add", ["a", "b"], ["y"])], "g", images,
                                                     [logits]))
    onnx.save(two_inputs, tmp_path / "two.onnx")
    with pytest.raises(RnasclError, match="has 2 inputs and 1 outputs; a classifier engine has one input"):
        open_engine(tmp_path / "two.onnx")


def test_strongly_typed_flags_and_the_build_environment_check_follow_tensorrt_10_and_11():
    from types import SimpleNamespace

    from rnascl_deploy.exporters.tensorrt import check_built_here, network_flags

    flags = SimpleNamespace(STRONGLY_TYPED=1)  # TensorRT 10's enum value (EXPLICIT_BATCH is 0)
    assert network_flags(SimpleNamespace(__version__="10.9.0.34", NetworkDefinitionCreationFlag=flags)) == 1 << 1
    # TensorRT 11: always strongly typed; the flag is deprecated and ignored, so none is passed.
    assert network_flags(SimpleNamespace(__version__="11.4.0.106", NetworkDefinitionCreationFlag=flags)) == 0
    here = {"version": "11.4.0.106", "gpu": "NVIDIA H200", "compute_capability": "9.0"}
    check_built_here(Path("e.engine"), dict(here), here)
    check_built_here(Path("e.engine"), {}, here)  # nothing recorded: TensorRT's own deserialisation decides
    with pytest.raises(RnasclError, match="built elsewhere: TensorRT 10.9.0.34 .*compute capability 8.9"):
        check_built_here(Path("e.engine"), {**here, "version": "10.9.0.34", "compute_capability": "8.9"}, here)


def test_onnxruntime_tensorrt_options_name_the_profile_and_a_cache_per_graph_and_profile(trained_run, exported,
                                                                                          tmp_path):
    """onnxruntime keys its cached TensorRT engines by file and tensor names only: a re-exported student of the same
    architecture, or another batch profile, must get its own cache folder, never the old engine."""
    engine = object.__new__(OnnxRuntimeEngine)  # the options alone; building the session needs a GPU
    engine.precision = "fp32"
    path = tmp_path / "engines" / "student.onnx"
    path.parent.mkdir()
    path.write_bytes((trained_run / "engines" / "student.onnx").read_bytes())

    def options(max_batch=64, opt_batch=8, cache_dir=tmp_path / "trt-cache"):
        return engine._tensorrt_options(path, "images", [1, 28, 28], None, max_batch, opt_batch, cache_dir)

    first = options()
    assert first["trt_profile_min_shapes"] == "images:1x1x28x28"
    assert first["trt_profile_opt_shapes"] == "images:8x1x28x28"
    assert first["trt_profile_max_shapes"] == "images:64x1x28x28" and engine.max_batch == 64
    cache = Path(first["trt_engine_cache_path"])
    assert cache.is_dir() and cache.parent == tmp_path / "trt-cache"
    assert Path(options(cache_dir=None)["trt_engine_cache_path"]).parent == path.parent / "trt-cache"  # no run
    assert options()["trt_engine_cache_path"] == str(cache)  # the same graph and profile: the same cache
    assert options(max_batch=128)["trt_engine_cache_path"] != str(cache)
    model = onnx.load(str(path))  # re-exported after more training: the same names, other weights
    weight = model.graph.initializer[0]
    weight.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(weight) + 0.01, weight.name))
    onnx.save(model, str(path))
    assert options()["trt_engine_cache_path"] != str(cache)


def test_an_onnxruntime_engine_reads_its_graph_once(trained_run, exported, monkeypatch):
    loads = []
    real = onnx.load
    monkeypatch.setattr(onnx, "load", lambda *args, **kwargs: loads.append(args[0]) or real(*args, **kwargs))
    engine = OnnxRuntimeEngine(trained_run / "engines" / "student.onnx")
    assert len(loads) == 1 and engine.input_shape == [1, 28, 28] and engine.num_classes == 10


def test_onnxruntimes_int8_graph_is_refused_for_its_tensorrt_provider_with_the_graph_to_use(trained_run, exported):
    with pytest.raises(RnasclError, match=r"TensorRT cannot parse .*student-int8\.trt\.onnx"):
        OnnxRuntimeEngine(trained_run / "engines" / "student-int8.onnx", device="tensorrt")


def test_an_onnxruntime_provider_that_does_not_start_is_refused_not_replaced(trained_run, exported, monkeypatch):
    """onnxruntime-gpu runs a session on the next provider, with only a logged error, when the first one's libraries
    (CUDA, cuDNN, TensorRT) do not load: a CUDA figure would silently be a CPU one. Played here by a session that
    does what onnxruntime does then: it drops the provider it could not start."""
    import onnxruntime as ort

    real = ort.InferenceSession
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", lambda path, options, providers: real(
        path, options, providers=[p for p in providers if p == "CPUExecutionProvider"]))
    with pytest.raises(RnasclError, match="could not start CUDAExecutionProvider .* on CPUExecutionProvider"):
        OnnxRuntimeEngine(trained_run / "engines" / "student.onnx", device="cuda")


def test_onnxruntimes_gpu_providers_run_on_the_gpu_the_process_computes_on(trained_run, exported, monkeypatch,
                                                                         tmp_path):
    """runtime.device cuda:1 makes GPU 1 the current one; onnxruntime's CUDA and TensorRT providers would take GPU 0
    unless told (played here without a GPU: the session records what it was given)."""
    import onnxruntime as ort

    given = {}

    def session(path, options, providers):
        given["providers"] = providers
        raise RuntimeError("no GPU here")

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider",
                                                                 "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", session)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    for device in ("cuda", "tensorrt"):
        with pytest.raises(RnasclError, match="no GPU here"):
            OnnxRuntimeEngine(trained_run / "engines" / "student.onnx", device=device, cache_dir=tmp_path)
        *gpus, cpu = given["providers"]
        assert cpu == "CPUExecutionProvider" and all(options["device_id"] == "1" for _, options in gpus)
    assert "trt_profile_max_shapes" in gpus[0][1]  # the TensorRT options kept beside the device


def test_export_device_reaches_the_parity_check(trained_run, tmp_path, monkeypatch):
    """`export --device` is the recipe's runtime.device, and parity is measured there: the student computes on the
    resolved device (``meta`` stands in for a GPU here) and the sidecar records where."""
    import rnascl_deploy.exporters.export as export_module
    import rnascl_deploy.runtime as runtime

    run = fresh_run(trained_run, tmp_path / "run")
    asked, seen = [], []

    def resolve(cfg, check_only=False):
        asked.append(cfg.device)
        return runtime.Runtime(torch.device("meta"))

    def parity(model, engine, images):
        seen.append(next(model.parameters()).device.type)
        return 0.0

    monkeypatch.setattr(runtime, "resolve", resolve)
    monkeypatch.setattr(export_module, "max_abs_diff", parity)
    result = CliRunner().invoke(main, ["-q", "export", str(run), "--format", "onnx", "--device", "cuda"])
    assert result.exit_code == 0, result.output
    assert set(asked) == {"cuda"} and seen == ["meta"]
    side = json.loads((run / "engines" / "student.onnx.json").read_text())
    assert side["parity_device"] == "meta" and side["parity_provider"] == "CPUExecutionProvider"


def test_the_tensorrt_major_onnxruntime_links_is_read_from_its_provider_library(tmp_path):
    from rnascl_deploy.engines.onnxrt import ort_tensorrt_major

    lib = tmp_path / "libonnxruntime_providers_tensorrt.so"
    lib.write_bytes(b"\x7fELF...\x00libcublas.so.13\x00libnvinfer.so.10\x00libnvinfer_plugin.so.10\x00"
                    b"libnvonnxparser.so.10\x00[TensorRT EP] libnvinfer.so.10 not found\x00")
    assert ort_tensorrt_major(lib) == 10
    lib.write_bytes(b"\x00libnvinfer.so.10\x00libnvinfer.so.11\x00")
    assert ort_tensorrt_major(lib) is None  # not one version: unknown, not a guess
    lib.write_bytes(b"\x00libcudart.so.13\x00")
    assert ort_tensorrt_major(lib) is None


@pytest.mark.parametrize("major", [10, None, 11])
def test_tensorrt_precision_flags_follow_the_tensorrt_onnxruntime_links(trained_run, exported, monkeypatch, tmp_path,
                                                                         major):
    """onnxruntime-gpu 1.31.1's TensorRT provider links TensorRT 10, whose weakly typed networks need
    trt_fp16_enable/trt_int8_enable to keep an fp16 or Q/DQ graph's precision; TensorRT 11 removed those builder
    flags (its networks follow the graph), so a provider linked against 11 is not given them. Played without a GPU:
    the session records its options, then drops the TensorRT provider as onnxruntime does when libnvinfer is missing,
    and the refusal says which TensorRT the provider needs."""
    import onnxruntime as ort

    from rnascl_deploy.engines import onnxrt

    given = {}
    real = ort.InferenceSession

    def session(path, options, providers):
        given["providers"] = providers
        return real(path, options, providers=["CPUExecutionProvider"])

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider",
                                                                 "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", session)
    monkeypatch.setattr(onnxrt, "ort_tensorrt_major", lambda: major)
    needs = f"TensorRT {major} \\(libnvinfer.so.{major}\\)" if major else "a TensorRT whose version could not be read"
    with pytest.raises(RnasclError, match=f"could not start TensorrtExecutionProvider .*needs {needs}"):
        OnnxRuntimeEngine(trained_run / "engines" / "student-fp16.onnx", device="tensorrt", cache_dir=tmp_path)
    trt_options = given["providers"][0][1]
    assert ("trt_fp16_enable" in trt_options) == (major != 11) and "trt_int8_enable" not in trt_options


def test_a_student_of_other_classes_than_the_recipes_data_is_refused(trained_run, tmp_path):
    """The engine's labels come from the recipe's data set: one whose classes differ from those the student was
    trained on (recorded in its checkpoint) would label the engine's outputs wrongly."""
    from rnascl_deploy.checkpoint import read_checkpoint, save_checkpoint

    run = fresh_run(trained_run, tmp_path / "run")
    model, meta = load_model(run / "student.safetensors")
    names = list(load_split("fashion-mnist", "test", limit=1)[1].class_names)
    save_checkpoint(run / "student.safetensors", model, "student", meta["model"],
                    {**meta["data"], "class_names": names[::-1]}, meta["recipe"], meta["metrics"])
    assert read_checkpoint(run / "student.safetensors")[1]["data"]["class_names"] == names[::-1]
    with pytest.raises(RnasclError, match="trained on the classes"):
        export_student(run, "onnx", load_recipe(run / "recipe.yaml"))
    assert not (run / "engines").exists()  # refused before any work
