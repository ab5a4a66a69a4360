"""The reference a gate compares an engine with: the fp32 model as a differentiable module, from a file.

Three formats, by suffix, none of them loaded through a full unpickler:

- ``.safetensors``: a checkpoint of this tool (safetensors tensors plus JSON metadata; :mod:`..checkpoint`).
- ``.onnx``: an fp32 ONNX graph through its replica (:mod:`..engines.replica`); ``onnx.load`` parses protobuf.
- ``.pt2``: a ``torch.export`` program (``torch.export.save``). ``torch.export.load`` unpickles some parts of an
  archive: payloads marked ``use_pickle`` (tensor subclasses) with a full unpickler, custom and opaque objects, and
  the sample inputs, which it retries with a full unpickler when weights-only loading fails. So the archive is
  inspected first (:func:`check_pt2`): only the pt2 archive layout, every weight and constant a raw tensor payload,
  no custom or opaque objects, no compiled AOTInductor code, and sample inputs that load with ``weights_only=True``;
  anything else is refused before ``torch.export.load`` sees the file. What remains is JSON and raw tensor bytes.
"""
from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import torch
from torch import nn

from ..errors import RnasclError

PT2_FILES = {"archive_format", "archive_version", "byteorder", ".data/version", ".data/serialization_id"}
PT2_DIRS = ("models/", "data/weights/", "data/constants/", "data/sample_inputs/", "extra/")


@dataclass
class Reference:
    """A reference model: ``module`` maps [0, 1] images (or the engine's input convention) to logits."""

    module: nn.Module
    path: str
    kind: str  # checkpoint | onnx | pt2
    input_shape: Optional[List[int]] = None
    num_classes: Optional[int] = None
    metadata: dict = field(default_factory=dict)  # the checkpoint's data record, or the ONNX file's metadata_props

    def describe(self) -> dict:
        return {"path": self.path, "kind": self.kind}


class ExportedProgram(nn.Module):
    """A ``torch.export`` program as a module whose train/eval switches are no-ops (the program is frozen in the
    mode it was exported in; its own ``eval()`` raises)."""

    def __init__(self, program: nn.Module):
        super().__init__()
        self._program = [program]  # not a registered submodule: eval_mode() must not reach it

    def _apply(self, fn, recurse=True):
        self._program[0]._apply(fn)
        return self

    def forward(self, x):
        return self._program[0](x)


def check_pt2(path: Path) -> None:
    """Refuse a ``.pt2`` archive that ``torch.export.load`` would have to unpickle (see the module's docstring)."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError):
        raise RnasclError(f"{path} is not a torch.export archive (not a zip file)") from None
    with archive:
        names = [n for n in archive.namelist() if not n.endswith("/")]
        lowered = [n.lower() for n in names]
        if len(set(lowered)) != len(lowered):  # zipfile reads the last of two same-named entries, torch's own
            raise RnasclError(f"{path} holds two entries of the same name, which a torch.export archive never "
                              "does (this check and torch.export.load could read different ones)")  # reader maybe not
        roots = {n.split("/", 1)[0] for n in names}
        if len(roots) != 1 or any("/" not in n for n in names):
            raise RnasclError(f"{path} is not a torch.export archive (files outside one top folder)")
        inner = {n.split("/", 1)[1]: n for n in names}
        odd = sorted(n for n in inner if n not in PT2_FILES and not n.startswith(PT2_DIRS))
        if odd or any(n.startswith("data/aotinductor/") for n in inner):
            raise RnasclError(f"{path} holds {odd[0] if odd else 'AOTInductor code'}, which is not part of a plain "
                              "torch.export program; save the program with torch.export.save (no AOTInductor "
                              "package) or give the reference as an ONNX file")
        if "archive_format" not in inner or \
                archive.read(inner["archive_format"]).decode(errors="replace").strip() != "pt2":
            raise RnasclError(f"{path} is not a pt2 archive (archive_format), perhaps an older torch.export file: "
                              "save it again with this torch's torch.export.save")
        for name in inner:
            if name.startswith(("data/weights/", "data/constants/")) and name.endswith(".pt"):
                raise RnasclError(f"{path} keeps {name} in the legacy pickled format; save it again with "
                                  "torch.export.save")
            if name.startswith(("data/weights/", "data/constants/")) and name.endswith("config.json"):
                try:
                    config = json.loads(archive.read(inner[name]))
                except ValueError:
                    raise RnasclError(f"{path}: {name} is not valid JSON") from None
                _check_payloads(path, name, config)
            if name.startswith("data/sample_inputs/"):
                try:
                    torch.load(io.BytesIO(archive.read(inner[name])), weights_only=True)
                except Exception as exc:  # the weights-only unpickler refuses anything but tensors and containers
                    raise RnasclError(f"{path}: its sample inputs {name} are not plain tensors ({type(exc).__name__}"
                                      "); torch.export.load would unpickle them in full, so the file is refused"
                                      ) from None


def _check_payloads(path: Path, name: str, config: dict) -> None:
    entries = config.get("config") if isinstance(config, dict) else None
    if not isinstance(entries, dict):
        raise RnasclError(f"{path}: {name} is not a payload configuration")
    for key, entry in entries.items():
        if not isinstance(entry, dict) or entry.get("use_pickle") is not False \
                or not str(entry.get("path_name", "")).startswith(("weight_", "tensor_")):
            raise RnasclError(f"{path}: {key} in {name} is a pickled payload or a custom object, which "
                              "torch.export.load would unpickle; export the program with plain tensors only")


def load_reference(path: Path | str) -> Reference:
    """The reference model at ``path`` (``.safetensors``, ``.onnx`` or ``.pt2``) in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise RnasclError(f"reference {str(path)!r} not found")
    if path.suffix == ".safetensors":
        from ..checkpoint import load_model

        model, meta = load_model(path)
        return Reference(model.eval(), str(path), "checkpoint", list(meta["data"]["input_shape"]),
                         meta["data"]["num_classes"], meta["data"])
    if path.suffix == ".onnx":
        from ..engines.replica import load_replica
        from ..exporters.metadata import read_metadata
        from ..exporters.onnx_export import onnx_io
        from ..exporters.provenance import onnx_precision

        if onnx_precision(path) != "fp32":
            raise RnasclError(f"{path} is an {onnx_precision(path)} graph; the reference is the fp32 model")
        shape, classes = onnx_io(path)
        return Reference(load_replica(path), str(path), "onnx", shape, classes, read_metadata(path))
    if path.suffix == ".pt2":
        check_pt2(path)
        try:
            program = torch.export.load(str(path))
        except Exception as exc:  # the deserializer's own errors: a damaged or incompatible archive
            raise RnasclError(f"torch.export.load cannot read {path}: {str(exc).splitlines()[0]}") from None
        return Reference(ExportedProgram(program.module()), str(path), "pt2")
    raise RnasclError(f"unknown reference type {path.suffix!r}; valid: .safetensors (a checkpoint of this tool), "
                      ".onnx (an fp32 graph), .pt2 (torch.export.save)")
