"""The replica of an ONNX graph (engines/replica.py) against the engine that runs the same file, for every kind of
graph the tool writes: fp32, fp16, onnxruntime's INT8 Q/DQ and the TensorRT-bound INT8 graph (float biases)."""
import numpy as np
import onnx
import pytest
import torch
from onnx import helper

from rnascl_deploy.data import batches
from rnascl_deploy.engines import open_engine
from rnascl_deploy.engines.replica import OnnxReplica, agreement, load_replica
from rnascl_deploy.errors import RnasclError
from rnascl_deploy.exporters.onnx_export import export_onnx
from rnascl_deploy.exporters.quantize import convert_fp16, quantize_int8


@pytest.fixture(scope="module")
def images(fmnist_test):
    return torch.cat([x for x, _ in batches(fmnist_test[0], 256)])


@pytest.fixture(scope="module")
def graphs(plain_model, images, tmp_path_factory):
    d = tmp_path_factory.mktemp("graphs")
    export_onnx(plain_model, (1, 28, 28), d / "fp32.onnx")
    convert_fp16(d / "fp32.onnx", d / "fp16.onnx")
    quantize_int8(d / "fp32.onnx", d / "int8.onnx", images[:128])
    # the float-bias Q/DQ form of the TensorRT-bound graph (export gives TensorRT 8-bit weights, which onnxruntime's
    # x86 kernels can only run exactly on VNNI CPUs: here 7-bit, so onnxruntime can stand in for TensorRT)
    quantize_int8(d / "fp32.onnx", d / "int8-trt.onnx", images[:128], quantize_bias=False, activations="s8")
    return d


def test_the_fp32_replica_is_the_model_and_has_its_gradient(plain_model, graphs, images):
    replica = load_replica(graphs / "fp32.onnx")
    x = images[:64].clone().requires_grad_(True)
    ref = images[:64].clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(replica(x), torch.arange(64) % 10).backward()
    torch.nn.functional.cross_entropy(plain_model(ref), torch.arange(64) % 10).backward()
    assert torch.allclose(replica(images), plain_model(images), atol=1e-5)
    assert torch.allclose(x.grad, ref.grad, atol=1e-6) and x.grad.abs().sum() > 0


@pytest.mark.parametrize("kind,min_agreement,max_diff", [("fp32", 100.0, 1e-4), ("fp16", 100.0, 5e-2),
                                                         ("int8", 99.0, 0.1), ("int8-trt", 99.0, 0.1)])
def test_the_replica_follows_its_engine(graphs, images, kind, min_agreement, max_diff):
    replica = load_replica(graphs / f"{kind}.onnx")
    twin = agreement(replica, open_engine(graphs / f"{kind}.onnx"), images)
    assert twin.n == len(images) and twin.top1_agreement_pct >= min_agreement and twin.max_abs_logit_diff < max_diff
    x = images[:32].clone().requires_grad_(True)
    replica(x).logsumexp(1).sum().backward()  # rounding passes gradients straight through: none is masked
    assert (x.grad.flatten(1).abs().amax(1) > 0).all()


def test_fp16_and_int8_replicas_round_where_their_graphs_do(graphs, images, plain_model):
    exact = plain_model(images)
    for kind in ("fp16", "int8"):
        diff = (load_replica(graphs / f"{kind}.onnx")(images) - exact).abs().max()
        assert diff > 1e-6, kind  # not the fp32 model in disguise
    fp16 = load_replica(graphs / "fp16.onnx")(images)
    assert torch.equal(fp16, fp16.half().float())  # its logits are float16 values, as the graph's output Cast's input


def test_fake_quantisation_rounds_half_to_even_and_saturates():
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [None, 4])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [None, 4])
    scale = helper.make_tensor("s", onnx.TensorProto.FLOAT, [], [0.5])
    zero = helper.make_tensor("z", onnx.TensorProto.INT8, [], [0])
    graph = helper.make_graph([helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
                               helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])],
                              "qdq", [x], [y], [scale, zero])
    replica = OnnxReplica(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]))
    out = replica(torch.tensor([[0.25, 0.75, 100.0, -100.0]]))
    assert out.tolist() == [[0.0, 1.0, 63.5, -64.0]]  # 0.5 -> 0, 1.5 -> 2 (half to even); int8 saturates


def _against_onnxruntime(nodes, inits, x, out_shape=None):
    """The replica of a one-input graph of ``nodes`` and onnxruntime on ``x``: (replica output, onnxruntime's)."""
    import onnxruntime as ort

    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, list(x.shape))],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, out_shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    expected = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": x.numpy()})[0]
    return OnnxReplica(model)(x), torch.from_numpy(expected)


def test_quantize_linear_rounds_before_adding_an_odd_zero_point():
    """ONNX: round(x / scale) half to even, then + zero point (3 here): ties land where onnxruntime puts them."""
    inits = [helper.make_tensor("s", onnx.TensorProto.FLOAT, [], [0.5]),
             helper.make_tensor("z", onnx.TensorProto.INT8, [], [3])]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
             helper.make_node("Cast", ["q"], ["y"], to=onnx.TensorProto.FLOAT)]
    x = torch.tensor([[0.25, 0.75, 1.25, -0.75, 70.0]])
    ours, theirs = _against_onnxruntime(nodes, inits, x, [1, 5])
    assert torch.equal(ours, theirs) and ours.tolist() == [[3.0, 5.0, 5.0, 1.0, 127.0]]


@pytest.mark.parametrize("attrs, with_c", [({}, True), ({"transB": 1}, True), ({"transA": 1, "alpha": 0.5}, True),
                                           ({"alpha": 2.0, "beta": 0.25}, True), ({"transB": 1}, False)])
def test_gemm_follows_onnxruntime_in_every_form(attrs, with_c):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(*((4, 5) if attrs.get("transA") else (5, 4)), generator=gen)
    w = torch.randn(*((3, 4) if attrs.get("transB") else (4, 3)), generator=gen)
    c = torch.randn(3, generator=gen)
    inits = [helper.make_tensor("w", onnx.TensorProto.FLOAT, list(w.shape), w.flatten().tolist())]
    if with_c:
        inits.append(helper.make_tensor("c", onnx.TensorProto.FLOAT, [3], c.tolist()))
    node = helper.make_node("Gemm", ["x", "w", "c"] if with_c else ["x", "w"], ["y"], **attrs)
    ours, theirs = _against_onnxruntime([node], inits, x, [5, 3])
    assert ours.shape == theirs.shape and torch.allclose(ours, theirs, atol=1e-5)


def test_flatten_at_the_last_axis_keeps_every_element_in_rows():
    x = torch.arange(8, dtype=torch.float32).reshape(2, 1, 2, 2)
    ours, theirs = _against_onnxruntime([helper.make_node("Flatten", ["x"], ["y"], axis=4)], [], x, [8, 1])
    assert ours.shape == theirs.shape == (8, 1) and torch.equal(ours, theirs)


def test_an_unsupported_op_is_refused_naming_it():
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [None, 1, 8, 8])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)
    graph = helper.make_graph([helper.make_node("LpNormalization", ["x"], ["y"])], "g", [x], [y])
    with pytest.raises(RnasclError, match="LpNormalization"):
        OnnxReplica(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]))


def test_a_file_that_is_not_onnx_is_refused(tmp_path):
    (tmp_path / "x.onnx").write_bytes(np.arange(64, dtype=np.uint8).tobytes())
    with pytest.raises(RnasclError, match="cannot read"):
        load_replica(tmp_path / "x.onnx")
