"""One runtime for every command: the device is checked before any work, bf16 autocasts the training passes while
evaluation stays fp32, and the training step never waits for the device (issue #19)."""
import sys

import pytest
import torch
from click.testing import CliRunner

import rnascl_deploy.train as train_module
from rnascl_deploy.cli import main
from rnascl_deploy.data import load_split
from rnascl_deploy.errors import RnasclError
from rnascl_deploy.recipe import load_recipe
from rnascl_deploy.runtime import Runtime, RuntimeConfig, resolve
from rnascl_deploy.train import TrainConfig, train

from .conftest import tiny_cnn

COMPUTING = [["teacher", "train"], ["teacher", "eval"], ["search"], ["retrain"], ["export"], ["verify"], ["run"]]


def test_auto_is_the_gpu_where_there_is_one_and_an_unavailable_gpu_is_refused_with_the_reason():
    expected = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    assert resolve(RuntimeConfig()).device == expected
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: the refusal cannot be shown here")
    with pytest.raises(RnasclError, match="CPU build|no GPU is visible"):
        resolve(RuntimeConfig(device="cuda"))
    with pytest.raises(RnasclError, match="fp16 needs a GPU"):
        resolve(RuntimeConfig(precision="fp16"))


def test_auto_on_the_cpu_says_why_once_when_work_starts_and_never_before_a_refusal(tmp_path, caplog):
    import rnascl_deploy.runtime as runtime_module

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: auto computes on it")
    runtime_module._say_why_cpu.cache_clear()
    caplog.set_level("INFO")
    result = CliRunner().invoke(main, ["teacher", "eval", str(tmp_path / "missing.safetensors")])
    assert result.exit_code == 2 and "not found" in result.output
    assert "computing on the CPU" not in caplog.text  # the refusal comes alone
    resolve(RuntimeConfig(), check_only=True)
    assert "computing on the CPU" not in caplog.text
    resolve(RuntimeConfig())
    resolve(RuntimeConfig())
    assert caplog.text.count("computing on the CPU, since this torch") == 1
    assert "CPU build" in caplog.text or "no GPU is visible" in caplog.text


def test_runs_onnx_engines_go_to_the_gpus_provider_where_the_run_computes_on_a_gpu(monkeypatch, caplog):
    import onnxruntime as ort

    from rnascl_deploy.engines import onnx_provider

    assert onnx_provider(torch.device("cpu")) == "cpu"
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert onnx_provider(torch.device("cuda:0")) == "cpu"  # a CPU-only onnxruntime on a GPU machine: said, not hidden
    assert "no CUDA provider" in caplog.text and "rnascl-deploy[gpu]" in caplog.text
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert onnx_provider(torch.device("cuda:0")) == "cuda"


@pytest.mark.parametrize("command", COMPUTING, ids=[" ".join(c) for c in COMPUTING])
def test_every_computing_command_takes_device(command):
    group = main
    for name in command:
        group = group.commands[name]
    assert "device" in {p.name for p in group.params}


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible: --device cuda would be accepted")
@pytest.mark.parametrize("args", [["search", "--out", "{tmp}/s"], ["teacher", "train", "--out", "{tmp}/t"],
                                  ["run", "--out", "{tmp}/r"]])
def test_an_unavailable_device_exits_2_before_any_work(tmp_path, args):
    args = [a.format(tmp=tmp_path) for a in args]
    for device in ("cuda", "cuda:3"):
        result = CliRunner().invoke(main, ["-q", *args, "--device", device], catch_exceptions=False)
        assert result.exit_code == 2 and "runtime.device" in result.output
    result = CliRunner().invoke(main, ["-q", *args, "--set", "runtime.device=tpu"], catch_exceptions=False)
    assert result.exit_code == 2 and "auto, cpu, cuda or cuda:N" in result.output
    assert list(tmp_path.iterdir()) == []


def test_the_device_flag_is_the_runtime_key(tmp_path):
    result = CliRunner().invoke(main, ["-q", "teacher", "eval", "builtin:teacher-fashion-mnist/model.safetensors",
                                       "--test-limit", "16", "--attacks", "fgsm", "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    assert load_recipe(None, {"runtime.device": "cpu", "runtime.precision": "bf16"}).runtime == \
        RuntimeConfig("cpu", "bf16")


@pytest.fixture(scope="module")
def splits():
    return load_split("fashion-mnist", "train", limit=256)[0], load_split("fashion-mnist", "val", limit=64)[0]


def _cfg(**kw):
    return TrainConfig(**{"epochs": 1, "optimizer": "sgd", "lr": 0.05, "warmup_epochs": 0, "adv": "pgd", "steps": 2,
                          "val_limit": 64, **kw})


def test_bf16_autocasts_training_and_keeps_evaluation_in_fp32(tmp_path, splits):
    model = tiny_cnn()
    seen = {"train": set(), "eval": set()}
    model.register_forward_hook(lambda m, i, out: seen["train" if m.training else "eval"].add(out.dtype))
    attack_dtypes = set()
    real = train_module.make_objective

    def recording(cfg, teacher=None):
        objective = real(cfg, teacher)

        def run(net, x, y, eps):  # the training attack runs in eval mode: record its dtype apart
            loss, terms = objective(net, x, y, eps)
            attack_dtypes.add(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
            return loss, terms
        return run

    result = train(model, *splits, _cfg(), tmp_path, 64, objective=recording(_cfg()), progress=False,
                   runtime=Runtime(torch.device("cpu"), "bf16"))
    assert seen["train"] == {torch.bfloat16} and attack_dtypes == {torch.bfloat16}
    # validation (clean and PGD-10) ran in fp32: the only eval-mode forwards outside the training step's autocast
    assert torch.float32 in seen["eval"] and 0 <= result.best_metrics["val_pgd10"] <= result.best_metrics["val_clean"]
    assert all(p.dtype == torch.float32 for p in model.parameters())


SYNCS = ("item", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__")


def test_the_training_step_never_reads_a_tensor_back(tmp_path, splits, monkeypatch):
    """Counts the package's own reads of tensor values (the host syncs on a GPU) inside TrainLoop.step, by patching
    Tensor's reading methods; torch's own internals (e.g. the optimiser's step counter) are not ours to count."""
    from rnascl_deploy.data import FASHION_MNIST_INFO
    from rnascl_deploy.distill import Distiller
    from rnascl_deploy.distill.crosslayer import FixedPairs
    from rnascl_deploy.teacher import load_teacher

    teacher = load_teacher("builtin:teacher-fashion-mnist/model.safetensors", FASHION_MNIST_INFO)
    model = tiny_cnn()
    from rnascl_deploy.taps import conv_taps
    distiller = Distiller(teacher, FixedPairs({conv_taps(model)[0]: conv_taps(teacher)[-1]}, 7))
    reads, inside = [], [False]
    for name in SYNCS:
        real = getattr(torch.Tensor, name)

        def counted(self, *a, _real=real, _name=name, **k):
            caller = sys._getframe(1).f_globals.get("__name__", "")
            if inside[0] and caller.startswith("rnascl_deploy"):
                reads.append(f"{_name} in {caller}")
            return _real(self, *a, **k)
        monkeypatch.setattr(torch.Tensor, name, counted)
    real_step = train_module.TrainLoop.step

    def step(self, *a, **k):
        inside[0] = True
        try:
            return real_step(self, *a, **k)
        finally:
            inside[0] = False
    monkeypatch.setattr(train_module.TrainLoop, "step", step)
    for adv in ("pgd", "trades", "n-fgsm"):
        cfg = _cfg(adv=adv, ema=0.9)
        train(tiny_cnn(), *splits, cfg, tmp_path / adv, 64, progress=False,
              objective=train_module.make_objective(cfg, distiller))
    assert reads == []


def test_the_students_memory_format_is_measured_once_without_touching_the_model_or_the_rng(monkeypatch):
    import rnascl_deploy.perf as perf

    monkeypatch.setattr(perf, "_fastest", {})
    model, runtime = tiny_cnn(), Runtime(torch.device("cpu"))
    before, rng = {k: v.clone() for k, v in model.state_dict().items()}, torch.get_rng_state()
    name = perf.fastest_memory_format(model, (1, 28, 28), 16, runtime)
    assert name in perf.MEMORY_FORMATS
    assert torch.equal(torch.get_rng_state(), rng)  # a seeded run draws the same numbers whatever the setting
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # weights and BN statistics
    assert all(p.grad is None for p in model.parameters())
    assert perf.fastest_memory_format(tiny_cnn(1), (1, 28, 28), 16, runtime) == name  # same architecture
    assert len(perf._fastest) == 1
    perf.fastest_memory_format(model, (1, 28, 28), 32, runtime)  # another batch is measured anew
    assert len(perf._fastest) == 2


@pytest.mark.parametrize("name", ["contiguous", "channels_last"])
def test_a_pinned_memory_format_is_the_one_the_student_computes_in(name):
    from rnascl_deploy.perf import MEMORY_FORMATS

    other = "channels_last" if name == "contiguous" else "contiguous"
    student = tiny_cnn().to(memory_format=MEMORY_FORMATS[other])  # placed from the other format
    runtime = resolve(load_recipe(None, {"runtime.memory_format": name}).runtime)
    assert runtime.pin_memory_format(student, (1, 28, 28), 16) is runtime  # nothing to decide
    student = runtime.place(student, (1, 28, 28), 16)
    weight = [p for p in student.parameters() if p.dim() == 4][-1]  # 8 input channels: the formats differ
    assert weight.is_contiguous(memory_format=MEMORY_FORMATS[name])
    assert not weight.is_contiguous(memory_format=MEMORY_FORMATS[other])


def test_auto_is_decided_once_and_an_unknown_memory_format_is_refused(monkeypatch):
    import rnascl_deploy.perf as perf

    monkeypatch.setattr(perf, "_fastest", {})
    runtime = resolve(RuntimeConfig(device="cpu"))
    pinned = runtime.pin_memory_format(tiny_cnn(), (1, 28, 28), 16)
    assert runtime.memory_format == "auto" and pinned.memory_format in perf.MEMORY_FORMATS
    assert pinned.device == runtime.device and pinned.precision == runtime.precision
    with pytest.raises(RnasclError, match="runtime.memory_format"):
        load_recipe(None, {"runtime.memory_format": "nhwc"})


def test_search_retrain_and_evaluation_place_every_tensor_explicitly(tmp_path):
    """The CPU's stand-in for a device mismatch on a GPU: with the default device set to ``meta``, a tensor the
    package creates without a device is a meta tensor and fails the moment it meets a real one (or is read)."""
    from rnascl_deploy.retrain import run_retrain
    from rnascl_deploy.search import run_search

    tiny = {"search.limit": 256, "search.epochs": 1, "search.arch_every": 3, "data.batch_size": 64,
            "runtime.device": "cpu", "retrain.limit": 256, "retrain.train.epochs": 1, "retrain.train.val_limit": 64,
            "retrain.train.adv": "n-fgsm", "retrain.eval_limit": 32, "attack.apgd_iters": 3,
            "attack.attacks": ["fgsm", "pgd5", "apgd-ce", "apgd-t", "square"], "attack.square_queries": 5}
    recipe = load_recipe("recipes/fashion-mnist.yaml", tiny)
    torch.set_default_device("meta")
    try:
        run_search(recipe, tmp_path, progress=False)
        metrics = run_retrain(tmp_path, recipe, progress=False)
    finally:
        torch.set_default_device(None)
    assert metrics["n"] == 32 and 0 <= metrics["worst_case_acc"] <= metrics["clean_acc"]


@pytest.fixture
def gpu_settings():
    """torch's process-wide backend settings, restored after the test (with the setters the package uses)."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark,
             torch.backends.cudnn.deterministic, torch.are_deterministic_algorithms_enabled())
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[:2]
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[2:4]
    torch.use_deterministic_algorithms(saved[4])


def test_a_gpu_computes_fp32_in_fp32_with_measured_convolutions_and_the_run_records_it(gpu_settings):
    """fp32 evaluations and attacks must be fp32 (torch's default lets convolutions run in TF32); the settings work
    on the CPU build too, where they are only recorded."""
    from rnascl_deploy.runtime import gpu_backends, set_gpu_backends

    torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark = True, False  # torch's defaults
    set_gpu_backends()
    assert gpu_backends() == {"tf32_matmul": False, "tf32_cudnn": False, "cudnn_benchmark": True,
                              "cudnn_deterministic": False, "deterministic_algorithms": False}
    if hasattr(torch.backends.cudnn, "conv"):  # torch 2.9+ reads back the same in its newer settings
        assert torch.backends.cudnn.conv.fp32_precision == torch.backends.cuda.matmul.fp32_precision == "ieee"
    with torch.backends.cudnn.flags(enabled=True, benchmark=True, allow_tf32=False):  # still readable by torch
        pass
    facts = Runtime(torch.device("cuda", 0), "fp16", "channels_last").describe()
    assert facts["backends"] == gpu_backends() and facts["precision"] == "fp16"
    assert facts["memory_format"] == "channels_last" and facts["device"] == "cuda:0"
    assert "backends" not in Runtime(torch.device("cpu")).describe()  # the CPU ignores them


def test_resolving_a_gpu_sets_its_backends_and_the_cpu_leaves_them_alone(monkeypatch):
    import rnascl_deploy.runtime as runtime_module

    calls = []
    monkeypatch.setattr(runtime_module, "set_gpu_backends", lambda: calls.append(1))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: None)
    assert resolve(RuntimeConfig(device="cpu")).device == torch.device("cpu") and calls == []
    assert resolve(RuntimeConfig(device="cuda")).device == torch.device("cuda", 0) and calls == [1]
