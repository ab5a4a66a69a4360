"""Export a retrained student (``RUN/student.safetensors``) to deployable engines in ``RUN/engines/``.

| format | file | what |
|---|---|---|
| ``onnx`` | ``student.onnx`` | fp32 ONNX (dynamo exporter, opset >= 18, dynamic batch, one file) |
| ``onnx-fp16`` | ``student-fp16.onnx`` | float16 graph, float32 input/output |
| ``onnx-int8`` | ``student-int8.onnx`` | explicit Q/DQ INT8: uint8 activations, 7-bit per-channel weights (U8S8) |
| ``tensorrt-fp16`` | ``student-fp16.engine`` | strongly typed TensorRT engine of ``student-fp16.trt.onnx`` (GPU) |
| ``tensorrt-int8`` | ``student-int8.engine`` | the same of ``student-int8.trt.onnx``: Q/DQ INT8, float biases (GPU) |

``onnx_only`` (TensorRT formats): write ``student-{fp16,int8}.trt.onnx``, the exact graph TensorRT's parser would be
given, with its sidecar and its logit parity (through onnxruntime), and stop: no TensorRT needed.

Every file gets a sidecar ``<file>.json`` (``exporters/provenance.py``): format, precision, the engine's own sha256,
the student checkpoint's sha256, input shape, class count, and the maximum absolute logit difference against
PyTorch on ``parity_size`` test images; TensorRT engines also the TensorRT version, GPU and compute capability they
were built with and their batch profile. Each engine is written under a temporary name, checked, its sidecar
written, and only then renamed into place: an interrupted export never leaves an engine that its sidecar does not
describe. An engine whose sidecar is missing, malformed or describes another file is not a finished export, and the
next export redoes it without ``force``; an engine exported from another student is replaced only with ``force``.
"""
