"""Checkpoints: safetensors weights plus JSON metadata, never a pickle.

A checkpoint is a ``.safetensors`` file whose header metadata holds one key, ``rnascl_deploy``, a JSON document::

    {"format": "rnascl-deploy/checkpoint", "version": 1,
     "kind": "teacher" | "student",
     "model": {"name": "cnn", "kwargs": {...}},          # how to rebuild the module (models.build_model)
     "data": {"name", "input_shape", "num_classes", "class_names", "mean", "std"},  # normalisation: in the model
     "recipe": {...}, "metrics": {...}, "created": "ISO-8601"}

Loading rebuilds the architecture from the metadata and loads the weights strictly: a corrupt file, a file of
another format, weights of another architecture and pickles are refused with a message that says what to do.
Foreign PyTorch state dicts (RobustBench ``.pt`` files) come in through :func:`import_state_dict`, which reads them
with ``torch.load(weights_only=True)`` so a pickle that carries code is refused, not run.
"""
from __future__ import annotations

import datetime
import hashlib
import json
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import nn

from .errors import RnasclError
from .fileio import atomic_path
from .models import build_model

FORMAT = "rnascl-deploy/checkpoint"
VERSION = 1
META_KEY = "rnascl_deploy"


def file_sha256(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_checkpoint(path: Path, model: nn.Module, kind: str, model_spec: Dict[str, Any], data: Dict[str, Any],
                    recipe: Optional[dict] = None, metrics: Optional[dict] = None) -> Path:
    """Write ``model``'s weights and metadata atomically to ``path`` (a ``.safetensors`` file)."""
    meta = {"format": FORMAT, "version": VERSION, "kind": kind, "model": model_spec, "data": data,
            "recipe": recipe or {}, "metrics": metrics or {},
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    blob = save(state, metadata={META_KEY: json.dumps(meta)})  # in memory, then written like every artifact (0644
    with atomic_path(Path(path)) as tmp:                       # less the umask; a full disk names the file)
        tmp.write_bytes(blob)
    return Path(path)


def _describe_foreign(path: Path) -> str:
    head = path.read_bytes()[:4]
    if head[:2] == b"PK" or head[:1] == b"\x80":
        return ("it is a PyTorch pickle (torch.save) file; rnascl-deploy never unpickles checkpoints. Convert a plain "
                "state dict with `rnascl-deploy teacher import`")
    return "it is not a safetensors file (corrupt, truncated, or another format)"


def read_checkpoint(path: Path | str) -> Tuple[Dict[str, torch.Tensor], dict]:
    """(state dict, metadata) of a checkpoint, with clear refusals for anything that is not one."""
    path = Path(path)
    if not path.is_file():
        raise RnasclError(f"checkpoint {str(path)!r} not found")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            raw_meta = (f.metadata() or {}).get(META_KEY)
        state = load_file(str(path))
    except PermissionError:  # the file's owner's business, not its format: the CLI names it as such
        raise
    except (SafetensorError, OSError, ValueError) as exc:
        raise RnasclError(f"cannot read checkpoint {str(path)!r}: {_describe_foreign(path)} ({exc})") from None
    if raw_meta is None:
        raise RnasclError(f"{str(path)!r} is a safetensors file without rnascl-deploy metadata; import plain weights "
                          "with `rnascl-deploy teacher import`")
    try:
        meta = json.loads(raw_meta)
    except json.JSONDecodeError:
        raise RnasclError(f"{str(path)!r}: its rnascl-deploy metadata is not valid JSON (the file is damaged)") \
            from None
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise RnasclError(f"{str(path)!r} has format {meta.get('format')!r} version {meta.get('version')!r}; "
                          f"this rnascl-deploy reads {FORMAT!r} version {VERSION}")
    return state, meta


def build_from_meta(meta: dict) -> nn.Module:
    data, spec = meta["data"], meta["model"]
    c, h, _ = data["input_shape"]
    with torch.device("cpu"):  # placed explicitly: a checkpoint's model is built on the CPU, whatever the default
        return build_model(spec["name"], c, data["num_classes"], h, data["mean"], data["std"],
                           **spec.get("kwargs", {}))


def _load_weights(model: nn.Module, state: Dict[str, torch.Tensor], source: str,
                  allow_missing_prefix: str = "") -> None:
    own = model.state_dict()
    missing = [k for k in own if k not in state and not (allow_missing_prefix and k.startswith(allow_missing_prefix))]
    unexpected = [k for k in state if k not in own]
    wrong_shape = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
                   if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong_shape:
        details = "; ".join(part for part in (
            f"missing {len(missing)} tensors (e.g. {missing[:3]})" if missing else "",
            f"unexpected {len(unexpected)} tensors (e.g. {unexpected[:3]})" if unexpected else "",
            f"wrong shapes: {wrong_shape[:3]}" if wrong_shape else "") if part)
        raise RnasclError(f"{source} does not match the architecture it should hold: {details}")
    model.load_state_dict(state, strict=not allow_missing_prefix)


def load_model(path: Path | str, kind: Optional[str] = None) -> Tuple[nn.Module, dict]:
    """Rebuild the model a checkpoint describes and load its weights; returns (model in eval mode, metadata)."""
    state, meta = read_checkpoint(path)
    if kind is not None and meta.get("kind") != kind:
        raise RnasclError(f"{str(path)!r} is a {meta.get('kind')} checkpoint, expected a {kind}")
    try:
        model = build_from_meta(meta)
    except (KeyError, TypeError, ValueError) as exc:
        raise RnasclError(f"{str(path)!r}: cannot rebuild its model from the metadata ({exc})") from None
    _load_weights(model, state, f"checkpoint {str(path)!r}")
    return model.eval(), meta


def import_state_dict(src: Path | str, model: nn.Module) -> None:
    """Load a foreign PyTorch state dict into ``model`` safely (``weights_only=True``).

    Accepts a bare state dict or one nested under ``state_dict``/``model``; strips a ``module.`` (DataParallel)
    prefix. The model's own normalisation buffers may be absent from the file.
    """
    src = Path(src)
    if not src.is_file():
        raise RnasclError(f"{str(src)!r} not found")
    try:
        obj = torch.load(str(src), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError or others for unsafe or corrupt files
        raise RnasclError(f"refused to load {str(src)!r}: it is not a plain tensor state dict that can be read "
                          f"without running code ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise RnasclError(f"{str(src)!r} does not hold a state dict of tensors")
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in obj.items()}
    _load_weights(model, state, f"{str(src)!r}", allow_missing_prefix="normalize.")
