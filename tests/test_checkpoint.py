import os
import pickle

import pytest
import torch

from rnascl_deploy.checkpoint import import_state_dict, load_model, read_checkpoint, save_checkpoint
from rnascl_deploy.errors import RnasclError
from rnascl_deploy.models import build_model

DATA = {"name": "fashion-mnist", "input_shape": [1, 28, 28], "num_classes": 10, "mean": [0.3], "std": [0.3]}
SPEC = {"name": "cnn", "kwargs": {"widths": [4, 8], "strides": [2, 2], "hidden": 16}}
MARKER = "/tmp/rnascl-deploy-test-pwned"


def _model():
    torch.manual_seed(0)
    return build_model("cnn", 1, 10, 28, [0.3], [0.3], **SPEC["kwargs"]).eval()


def test_round_trip_keeps_weights_and_metadata(tmp_path):
    model = _model()
    path = save_checkpoint(tmp_path / "m.safetensors", model, "teacher", SPEC, DATA, {"r": 1}, {"acc": 0.5})
    loaded, meta = load_model(path, kind="teacher")
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(loaded(x), model(x))
    assert meta["metrics"] == {"acc": 0.5} and meta["model"] == SPEC and meta["data"] == DATA
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left behind
    with pytest.raises(RnasclError, match="is a teacher checkpoint, expected a student"):
        load_model(path, kind="student")


def test_corrupt_and_truncated_files_are_refused(tmp_path):
    path = save_checkpoint(tmp_path / "m.safetensors", _model(), "teacher", SPEC, DATA)
    data = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.safetensors").write_bytes(os.urandom(256))
    for name in ("cut.safetensors", "junk.safetensors"):
        with pytest.raises(RnasclError, match="cannot read checkpoint"):
            load_model(tmp_path / name)
    with pytest.raises(RnasclError, match="not found"):
        load_model(tmp_path / "absent.safetensors")


def test_weights_of_another_architecture_are_refused(tmp_path):
    path = save_checkpoint(tmp_path / "m.safetensors", _model(), "teacher", SPEC, DATA)
    state, meta = read_checkpoint(path)
    meta["model"]["kwargs"]["widths"] = [4, 16]
    other = build_model("cnn", 1, 10, 28, [0.3], [0.3], widths=[4, 16], strides=[2, 2], hidden=16)
    foreign = save_checkpoint(tmp_path / "other.safetensors", other, "teacher", meta["model"], DATA)
    # graft the first model's weights under the second model's metadata
    import json

    from safetensors.torch import save_file
    save_file(state, str(tmp_path / "graft.safetensors"),
              metadata={"rnascl_deploy": json.dumps(read_checkpoint(foreign)[1])})
    with pytest.raises(RnasclError, match="does not match the architecture.*wrong shapes"):
        load_model(tmp_path / "graft.safetensors")


class Payload:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


def test_pickles_are_refused_and_never_run(tmp_path):
    if os.path.exists(MARKER):
        os.unlink(MARKER)
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"conv.weight": Payload()}))
    torch_evil = tmp_path / "evil_zip.pt"
    torch.save({"x": torch.zeros(1)}, torch_evil)
    with pytest.raises(RnasclError, match="PyTorch pickle"):
        load_model(torch_evil)
    with pytest.raises(RnasclError, match="PyTorch pickle"):
        load_model(evil)
    with pytest.raises(RnasclError, match="refused to load"):
        import_state_dict(evil, _model())
    assert not os.path.exists(MARKER)


def test_import_plain_state_dict(tmp_path):
    model = _model()
    state = {"module." + k: v for k, v in model.state_dict().items() if not k.startswith("normalize")}
    torch.save({"state_dict": state}, tmp_path / "w.pt")
    fresh = build_model("cnn", 1, 10, 28, [0.3], [0.3], **SPEC["kwargs"]).eval()
    import_state_dict(tmp_path / "w.pt", fresh)
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(fresh(x), model(x))
