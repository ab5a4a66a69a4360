"""The recipe's ``export`` section and the one table of export formats."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, List

from ..schema import ANY, Each, OneOf, at_least, between

READS = ("data", "export", "attack.eps")  # the recipe's keys `export` reads; eps: the metadata
CONSUMES = ("student",)  # the run directory's files it reads (rundir.RunDir attributes)
WRITES = ("engines",)

# format -> (engine file in RUN/engines/, precision)
FORMATS = {"onnx": ("student.onnx", "fp32"), "onnx-fp16": ("student-fp16.onnx", "fp16"),
           "onnx-int8": ("student-int8.onnx", "int8"), "tensorrt-fp16": ("student-fp16.engine", "fp16"),
           "tensorrt-int8": ("student-int8.engine", "int8")}
# TensorRT format -> the exact ONNX graph handed to TensorRT's parser, in RUN/engines/ beside the engine (written by
# every TensorRT export, and alone by `export --onnx-only`); the INT8 one keeps float biases (TensorRT's parser takes
# no INT32 input on a DequantizeLinear), unlike onnxruntime's student-int8.onnx.
TENSORRT_ONNX = {"tensorrt-fp16": "student-fp16.trt.onnx", "tensorrt-int8": "student-int8.trt.onnx"}


@dataclass
class ExportConfig:
    """``rnascl-deploy export``: formats, INT8 calibration and the TensorRT optimisation profile."""

    CHECKS: ClassVar[dict] = {"formats": Each(OneOf(list(FORMATS))), "opset": between(13, 24),
                              "calibration_size": at_least(1), "int8_float_ends": ANY,
                              "int8_activations": OneOf(["u8", "s8"]), "parity_size": at_least(1),
                              "max_batch": between(1, 65536), "opt_batch": between(1, 65536),
                              "bench_batches": Each(between(1, 65536))}

    formats: List[str] = field(default_factory=lambda: ["onnx"])
    opset: int = 18
    calibration_size: int = 1000  # training images that calibrate INT8 activations
    int8_float_ends: bool = True  # keep the first conv and the final linear layer in float
    int8_activations: str = "u8"  # onnx-int8's activations: u8 (U8S8) or s8 (S8S8); exporters/quantize.py
    parity_size: int = 1000  # test images on which exported logits are compared with PyTorch
    max_batch: int = 256  # TensorRT optimisation profile: batch 1 .. max_batch
    opt_batch: int = 32
    bench_batches: List[int] = field(default_factory=lambda: [1, 8, 64])  # `run`'s latency benchmark

    def validate(self):
        if self.opt_batch > self.max_batch:
            return f"opt_batch ({self.opt_batch}) must be at most max_batch ({self.max_batch})"
        return None
