"""What every exported ONNX file says about itself: ``metadata_props`` a runtime, a user's code and ``verify`` read.

| key | value |
|---|---|
| ``producer`` | ``rnascl-deploy <version>`` |
| ``precision`` | ``fp32``, ``fp16`` or ``int8`` |
| ``dataset`` | the data set the model was trained on (``fashion-mnist``, ``cifar10``, ``imagefolder``) |
| ``class_names`` | JSON list, index = class id (empty where the data set names none) |
| ``input`` | JSON ``{"name", "layout": "NCHW", "shape": [C, H, W], "range": [0, 1], "dtype": "float32"}`` |
| ``normalization`` | JSON ``{"mean", "std", "in_graph": true}``: the graph normalises its [0, 1] input itself |
| ``threat_model`` | JSON ``{"norm": "Linf", "eps": 0.1}``: the budget the model was trained and verified for |
| ``student_sha256`` | sha256 of the ``student.safetensors`` the file was exported from |

Values are strings (ONNX's rule); the JSON ones parse with ``json.loads``. A foreign file without these keys is
verified with the recipe's ``verify.input_mean``/``input_std`` and ``attack.eps`` instead (docs/export.md).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import onnx

JSON_KEYS = ("class_names", "input", "normalization", "threat_model")


def model_metadata(precision: str, dataset: str, class_names, input_name: str, input_shape, mean, std, eps: float,
                   student_sha256: str) -> dict:
    """The metadata of one exported graph, as :func:`write_metadata` takes it."""
    from .. import __version__

    return {"producer": f"rnascl-deploy {__version__}", "precision": precision, "dataset": dataset,
            "class_names": list(class_names), "student_sha256": student_sha256,
            "input": {"name": input_name, "layout": "NCHW", "shape": list(input_shape), "range": [0, 1],
                      "dtype": "float32"},
            "normalization": {"mean": list(mean), "std": list(std), "in_graph": True},
            "threat_model": {"norm": "Linf", "eps": eps}}


def write_metadata(path: Path, meta: dict) -> None:
    """Set ``meta`` as the ``metadata_props`` of the ONNX file at ``path`` (in place: call it on a temporary file)."""
    model = onnx.load(str(path))
    del model.metadata_props[:]
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value) if key in JSON_KEYS else str(value)
    onnx.save(model, str(path))


def read_metadata(model) -> dict:
    """The ``metadata_props`` of an ONNX model (a ModelProto or a path), JSON values parsed; {} when it has none.
    A value that does not parse is kept as its string."""
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model), load_external_data=False)
    meta = {}
    for entry in model.metadata_props:
        value = entry.value
        if entry.key in JSON_KEYS:
            try:
                value = json.loads(value)
            except ValueError:
                pass
        meta[entry.key] = value
    return meta


def eps_of(meta: dict) -> Optional[float]:
    tm = meta.get("threat_model")
    return float(tm["eps"]) if isinstance(tm, dict) and isinstance(tm.get("eps"), (int, float)) else None
