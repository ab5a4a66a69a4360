import json
import xml.etree.ElementTree as ET

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

from rnascl_deploy.checkpoint import file_sha256
from rnascl_deploy.cli import main
from rnascl_deploy.errors import RnasclError
from rnascl_deploy.exporters.export import export_student
from rnascl_deploy.exporters.onnx_export import export_onnx
from rnascl_deploy.models import build_model
from rnascl_deploy.recipe import Recipe, load_recipe
from rnascl_deploy.verify import verify_run


def _verify(run, engine, *extra):
    return CliRunner().invoke(main, ["-q", "verify", str(run), "--engine", str(engine), "--test-limit", "100", *extra])


def vouch(engine, genuine):
    """Give ``engine`` the sidecar of the ``genuine`` export with ``engine``'s own sha256: an engine whose
    provenance checks out, so that verify goes on to measure it (as if an export had produced a bad engine)."""
    side = json.loads((genuine.parent / f"{genuine.name}.json").read_text())
    side["engine_sha256"] = file_sha256(engine)
    (engine.parent / f"{engine.name}.json").write_text(json.dumps(side))
    return engine


def copy_run(trained_run, engines, dst, *names):
    """The trained run's files and the named engines with their sidecars, copied to ``dst``."""
    dst.mkdir()
    for f in trained_run.iterdir():
        if f.is_file():
            (dst / f.name).write_bytes(f.read_bytes())
    (dst / "engines").mkdir()
    for name in names:
        for f in (engines / name, engines / f"{name}.json"):
            (dst / "engines" / f.name).write_bytes(f.read_bytes())
    return dst


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
    eng, ref = report["figures"]["engine"], report["figures"]["reference"]
    assert report["passed"] and report["agreement_pct"] == 100.0 and report["n"] == 100
    assert list(eng["after_pct"]) == ["transfer", "apgd_ce", "apgd_t", "square"]
    assert list(ref["after_pct"]) == ["apgd_ce", "apgd_t", "square"]
    assert report["engine"]["replica"]["top1_agreement_pct"] == 100.0
    assert report["engine"]["replica"]["max_abs_logit_diff"] < 1e-4
    assert eng["clean_acc_pct"] > 60 and eng["worst_case_acc_pct"] <= eng["clean_acc_pct"]
    assert list(eng["after_pct"].values()) == sorted(eng["after_pct"].values(), reverse=True)  # a cascade
    assert abs(eng["worst_case_acc_pct"] - ref["worst_case_acc_pct"]) <= 2.0  # the same model, rounding apart
    assert {c["unit"] for c in report["checks"]} <= {"pts", "%"} and all(
        c["name"].endswith("_" + c["unit"].replace("%", "pct")) for c in report["checks"])
    suite = ET.parse(tmp_path / "j.xml").getroot()
    assert suite.get("failures") == "0" and int(suite.get("tests")) == len(report["checks"])
    assert (trained_run / "verify" / "student.onnx.md").read_text().startswith("# Verification: PASS")


def test_int8_engine_is_attacked_through_its_replica(trained_run, engines, tmp_path):
    result = _verify(trained_run, engines / "student-int8.onnx", "--json", "--out", str(tmp_path / "v"))
    report = json.loads(result.output)
    assert report["engine"]["precision"] == "int8"
    assert report["engine"]["replica"]["graph"].endswith("student-int8.onnx")
    assert report["engine"]["replica"]["top1_agreement_pct"] >= 99.0
    assert report["engine"]["metadata"]["precision"] == "int8"
    failed = {c["name"] for c in report["checks"] if not c["passed"]}
    assert "worst_case_drop_vs_reference_pts" not in failed  # quantisation kept what robustness there was
    assert result.exit_code == (1 if failed else 0)


def test_a_student_without_robustness_fails_the_default_floor(trained_run, engines, tmp_path):
    floor = Recipe().verify.min_worst_case_pct  # the embedded default's (the fixture's recipe turns it off)
    result = _verify(trained_run, engines / "student.onnx", "--out", str(tmp_path / "v"),
                     "--set", f"verify.min_worst_case_pct={floor}")
    assert result.exit_code == 1, result.output
    assert "[FAIL] worst_case_floor_pct" in result.output
    assert "[pass] worst_case_drop_vs_reference_pts" in result.output  # export kept what little there was


def test_damaged_engine_fails_with_exit_1(trained_run, engines, tmp_path):
    model = onnx.load(str(engines / "student.onnx"))
    rng = np.random.default_rng(0)
    for init in model.graph.initializer:
        w = numpy_helper.to_array(init)
        if w.ndim == 4 and w.dtype == np.float32:
            init.CopyFrom(numpy_helper.from_array(w + rng.normal(0, 0.5 * w.std(), w.shape).astype(np.float32),
                                                  init.name))
    onnx.save(model, str(tmp_path / "damaged.onnx"))
    assert _verify(trained_run, tmp_path / "damaged.onnx").exit_code == 2  # no provenance: refused unmeasured
    result = _verify(trained_run, vouch(tmp_path / "damaged.onnx", engines / "student.onnx"))
    assert result.exit_code == 1 and "FAIL" in result.output


def test_another_models_engine_fails_and_a_wrong_shape_is_a_usage_error(trained_run, engines, tmp_path):
    other = build_model("cnn", 1, 10, 28, [0.3], [0.3], widths=[4], strides=[2], hidden=8)
    export_onnx(other, (1, 28, 28), tmp_path / "other.onnx")
    unvouched = _verify(trained_run, tmp_path / "other.onnx")
    assert unvouched.exit_code == 2 and "no sidecar" in unvouched.output
    assert _verify(trained_run, vouch(tmp_path / "other.onnx", engines / "student.onnx")).exit_code == 1
    rgb = build_model("cnn", 3, 10, 32, [0.3] * 3, [0.3] * 3, widths=[4], strides=[2], hidden=8)
    export_onnx(rgb, (3, 32, 32), tmp_path / "rgb.onnx")
    result = _verify(trained_run, vouch(tmp_path / "rgb.onnx", engines / "student.onnx"))
    assert result.exit_code == 2 and "not a model of this data set" in result.output


def _refused(run, engine, *words):
    result = _verify(run, engine)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "--force" in result.output and not (run / "verify").exists()
    for word in words:
        assert word in result.output, (word, result.output)
    recipe = load_recipe(run / "recipe.yaml")
    with pytest.raises(RnasclError):
        verify_run(engine, recipe, run=run, limit=8, progress=False)
    return result


def test_an_engine_without_its_sidecar_is_refused(trained_run, engines, tmp_path):
    run = copy_run(trained_run, engines, tmp_path / "run", "student-int8.onnx")
    (run / "engines" / "student-int8.onnx.json").unlink()
    _refused(run, run / "engines" / "student-int8.onnx", "no sidecar", "--format onnx-int8")


def test_a_sidecar_claiming_another_precision_is_refused(trained_run, engines, tmp_path):
    run = copy_run(trained_run, engines, tmp_path / "run", "student-int8.onnx")
    side_path = run / "engines" / "student-int8.onnx.json"
    side = json.loads(side_path.read_text())
    side["precision"] = "fp32"  # what an INT8 engine verified as fp32 (without the hybrid attack) would need
    side_path.write_text(json.dumps(side))
    _refused(run, run / "engines" / "student-int8.onnx", "int8 graph", "sidecar says fp32")


def test_an_engine_replaced_by_another_engine_is_refused(trained_run, engines, tmp_path):
    run = copy_run(trained_run, engines, tmp_path / "run", "student.onnx", "student-int8.onnx")
    (run / "engines" / "student.onnx").write_bytes((run / "engines" / "student-int8.onnx").read_bytes())
    _refused(run, run / "engines" / "student.onnx", "not the file its sidecar describes")


def test_an_engine_copied_with_its_sidecar_over_another_formats_name_is_refused(trained_run, engines, tmp_path):
    run = copy_run(trained_run, engines, tmp_path / "run", "student.onnx")
    for suffix in ("", ".json"):  # the fp32 engine and its true sidecar, under the INT8 engine's names
        (run / "engines" / f"student-int8.onnx{suffix}").write_bytes((run / "engines" / f"student.onnx{suffix}")
                                                                     .read_bytes())
    _refused(run, run / "engines" / "student-int8.onnx", "is the file name of onnx-int8, but its sidecar says onnx")


def test_a_malformed_sidecar_is_a_clear_error(trained_run, engines, tmp_path):
    run = copy_run(trained_run, engines, tmp_path / "run", "student.onnx")
    (run / "engines" / "student.onnx.json").write_text('{"format": "onnx", "precision": ')
    _refused(run, run / "engines" / "student.onnx", "not valid JSON")
    (run / "engines" / "student.onnx.json").write_text('["onnx", "fp32"]')
    _refused(run, run / "engines" / "student.onnx", "not an object")


def test_an_engine_of_another_student_is_refused(trained_run, engines, tmp_path):
    run = copy_run(trained_run, engines, tmp_path / "run", "student.onnx")
    side_path = run / "engines" / "student.onnx.json"
    side = json.loads(side_path.read_text())
    side["student_sha256"] = "ab" * 32
    side_path.write_text(json.dumps(side))
    _refused(run, run / "engines" / "student.onnx", "another student checkpoint")


def test_another_runs_engine_is_refused_with_its_own_run_not_a_forced_export(trained_run, engines, tmp_path):
    run = copy_run(trained_run, engines, tmp_path / "run", "student.onnx")
    elsewhere = tmp_path / "other-run" / "engines"
    elsewhere.mkdir(parents=True)
    for name in ("student.onnx", "student.onnx.json"):
        (elsewhere / name).write_bytes((run / "engines" / name).read_bytes())
    side = json.loads((elsewhere / "student.onnx.json").read_text())
    side["student_sha256"] = "ab" * 32  # the other run's student
    (elsewhere / "student.onnx.json").write_text(json.dumps(side))
    result = _verify(run, elsewhere / "student.onnx")
    assert result.exit_code == 2 and "another student checkpoint" in result.output
    assert "the run directory it was exported from" in result.output and "--force" not in result.output


def test_an_engine_of_a_fixed_batch_of_7_is_refused(trained_run, engines, tmp_path):
    run = copy_run(trained_run, engines, tmp_path / "run", "student.onnx")
    path = run / "engines" / "student.onnx"
    model = onnx.load(str(path))
    for value in (model.graph.input[0], model.graph.output[0]):
        value.type.tensor_type.shape.dim[0].Clear()
        value.type.tensor_type.shape.dim[0].dim_value = 7
    onnx.save(model, str(path))
    vouch(path, path)  # its provenance holds: the batch is what is refused
    _refused(run, path, "batches of 7", "dynamic batch", "--format onnx ")


def test_the_reference_checkpoints_memory_format_is_measured_in_fp32_as_verify_computes(monkeypatch):
    """verify computes in fp32 whatever the recipe trains in: its memory-format probe (runtime.memory_format auto)
    times the reference in fp32 too, not in the training precision."""
    import torch

    import rnascl_deploy.runtime as runtime_module
    from rnascl_deploy.runtime import Runtime
    from rnascl_deploy.verify.reference import Reference
    from rnascl_deploy.verify.runner import _placed_reference

    from .conftest import tiny_cnn

    measured = []
    monkeypatch.setattr(runtime_module, "fastest_memory_format",
                        lambda model, shape, batch, runtime: measured.append(runtime.precision) or "contiguous")
    reference = _placed_reference(Reference(tiny_cnn(), "student.safetensors", "checkpoint"), None,
                                  Runtime(torch.device("cpu"), "bf16"), (1, 28, 28), 16)
    assert measured == ["fp32"] and not reference.training


def test_batches_attacked_at_once_give_the_results_of_one_after_the_other(trained_run, engines):
    import torch

    from rnascl_deploy.checkpoint import load_model
    from rnascl_deploy.data import load_split
    from rnascl_deploy.engines import open_engine
    from rnascl_deploy.engines.replica import load_replica
    from rnascl_deploy.perf import torch_threads
    from rnascl_deploy.verify.measure import EngineDecides, engine_cascade, reference_cascade

    attacks = load_recipe(trained_run / "recipe.yaml").attack.build(["apgd-ce", "apgd-t", "square"])
    student = load_model(trained_run / "student.safetensors")[0].eval()
    engine = open_engine(engines / "student.onnx", threads=1, spinning=False)
    decides = EngineDecides(load_replica(engines / "student.onnx"), engine)
    points, _ = load_split("fashion-mnist", "test", limit=70)
    runs = []
    with torch_threads(1):  # the same kernels either way: equal results, not merely close ones
        for workers in (1, 3):
            ours = reference_cascade(student, points, attacks, batch_size=20, progress=False, workers=workers)
            runs.append((ours, engine_cascade(engine, decides, points, attacks, ours, batch_size=20,
                                              progress=False, workers=workers)))
    (one, m_one), (many, m_many) = runs
    assert torch.equal(one.pred, many.pred) and one.figures.after_pct == many.figures.after_pct
    for name, (idx, adv) in one.examples.items():
        assert torch.equal(idx, many.examples[name][0]) and torch.equal(adv, many.examples[name][1])
    assert m_one.engine.after_pct == m_many.engine.after_pct and m_one.agreement_pct == m_many.agreement_pct
    assert m_one.engine.clean_acc_pct > m_one.engine.worst_case_acc_pct  # the attacks broke something to compare


def test_batches_at_once_share_the_cpu_threads_and_leave_a_gpu_or_tensorrt_engine_alone(monkeypatch, tmp_path):
    import torch

    from rnascl_deploy.verify.runner import batches_at_once

    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    cpu = torch.device("cpu")
    assert batches_at_once(tmp_path / "m.onnx", "cpu", cpu, 1000, 500) == (2, 2)  # two batches: two at once
    assert batches_at_once(tmp_path / "m.onnx", "cpu", cpu, 10000, 500) == (4, 1)
    assert batches_at_once(tmp_path / "m.onnx", "cpu", cpu, 100, 500) == (1, 4)
    assert batches_at_once(tmp_path / "m.engine", "cpu", cpu, 1000, 500) == (1, 4)
    assert batches_at_once(tmp_path / "m.onnx", "cuda", torch.device("cuda"), 1000, 500) == (1, 4)


def test_in_order_yields_in_the_items_order_and_raises_a_workers_error_in_the_caller():
    import time

    from rnascl_deploy.verify.measure import in_order

    def later_first(i):
        time.sleep(0.02 * max(4 - i, 0))  # the later items finish first
        if i == 5:
            raise ValueError("item 5")
        return i

    assert list(in_order(later_first, range(4), 3)) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="item 5"):
        list(in_order(later_first, range(7), 2))


def test_the_engine_decides_bit_for_bit_and_the_replica_gives_the_gradient():
    import torch

    from rnascl_deploy.verify.measure import EngineDecides

    torch.manual_seed(0)
    replica = torch.nn.Linear(16, 10)

    def engine(x):  # a coarse engine: logits on a grid of 1/64, as a quantised graph gives them
        return (replica(x) * 64).round() / 64

    x = torch.randn(256, 16, requires_grad=True)
    out = EngineDecides(replica, engine)(x)
    assert torch.equal(out, engine(x.detach()))  # z + (e - z) is not always e in floating point
    out[:, 3].sum().backward()
    assert torch.allclose(x.grad, replica.weight[3].expand(256, -1))


def test_a_drop_exactly_at_the_limit_passes_despite_float_noise():
    from rnascl_deploy.verify.config import VerifyConfig
    from rnascl_deploy.verify.gate import checks
    from rnascl_deploy.verify.measure import Figures, Measurement

    def figures(clean, worst):
        return Figures(clean, {"square": worst}, worst)

    m = Measurement(1000, 100.0, figures(80.0, 64.4), figures(80.0, 62.4), 0)
    assert 64.4 - 62.4 > 2.0  # the noise the gate must not fail on
    by_name = {c.name: c for c in checks(m, VerifyConfig(max_adv_drop_pts=2.0, min_worst_case_pct=62.4))}
    assert by_name["worst_case_drop_vs_reference_pts"].passed and by_name["worst_case_floor_pct"].passed
    m.engine = figures(80.0, 62.3)
    assert not checks(m, VerifyConfig(max_adv_drop_pts=2.0))[2].passed  # one image more is a drop past the limit


def test_a_pytorch_engine_computes_where_its_replica_and_the_attacks_do(trained_run, tmp_path, monkeypatch):
    import rnascl_deploy.verify.runner as runner_module

    opened = {}

    def stop_at_open(path, provider, **kwargs):  # the replica is the engine's own module: one device for both
        opened.update(provider=provider, **kwargs)
        raise RnasclError("opened")

    monkeypatch.setattr(runner_module, "open_engine", stop_at_open)
    recipe = load_recipe(trained_run / "recipe.yaml", {"runtime.device": "cpu"})
    with pytest.raises(RnasclError, match="opened"):
        verify_run(trained_run / "student.safetensors", recipe, run=trained_run, provider="cuda", limit=8,
                   progress=False, out=tmp_path)
    assert opened["provider"] == "cuda" and str(opened["device"]) == "cpu"  # not the provider's GPU


def test_metrics_json_is_compared_only_for_its_own_student_and_points(tmp_path):
    """verify holds an engine against RUN/metrics.json only where that evaluated the same student on the same
    points; one written before it recorded them is taken on its count of points."""
    from rnascl_deploy.verify.runner import _same_points_metrics

    figures = {"n": 10, "eps": 0.1, "clean_acc": 0.8, "worst_case_acc": 0.6, "adv_acc": {}}
    (tmp_path / "metrics.json").write_text(json.dumps({**figures, "student_sha256": "s", "points_sha256": "p"}))
    assert _same_points_metrics(tmp_path, 10, "p", 0.1, "s", True) is not None
    assert _same_points_metrics(tmp_path, 10, "q", 0.1, "s", True) is None  # other points (a reshuffled folder)
    assert _same_points_metrics(tmp_path, 10, "p", 0.1, "t", True) is None  # another student (retrained since)
    assert _same_points_metrics(tmp_path, 10, "p", 0.1, "s", False) is None  # the reference is not the student
    (tmp_path / "metrics.json").write_text(json.dumps(figures))
    assert _same_points_metrics(tmp_path, 10, "q", 0.1, "t", True) is not None
    assert _same_points_metrics(tmp_path, 11, "q", 0.1, "t", True) is None
