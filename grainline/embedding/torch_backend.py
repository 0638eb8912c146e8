"""The torch backend: sentence-transformers models on cpu, cuda or mps, at fp32, fp16,
bf16 or dynamic int8. torch is imported inside each function: a run with nothing to
embed, or one on the OpenVINO backend, never imports it."""

from __future__ import annotations

from typing import Any

import numpy as np

from .precision import PROBES


def pick_device(requested: str = "auto") -> str:
    """``auto`` picks cuda, then mps, then cpu; anything else is checked and returned."""
    import torch

    if requested == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {requested!r} requested but CUDA is not available; use --device cpu or auto")
    if requested == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("device 'mps' requested but MPS is not available; use --device cpu or auto")
    return requested


def load(path: str, device: str, model: str) -> Any:
    """The fp32 sentence-transformers model at ``path`` on ``device`` (``model``: the
    name the user gave, for the error message)."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:  # pragma: no cover - a dependency
        raise RuntimeError("embedding needs sentence-transformers: pip install sentence-transformers") from exc
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a bar for reading 100 tensors is noise
    except ImportError:  # pragma: no cover
        pass
    try:
        return SentenceTransformer(path, device=device)
    except OSError as exc:
        raise ValueError(
            f"cannot load embedding model {model!r} ({exc}); give a local path "
            "or a sentence-transformers model name available offline"
        ) from exc


def forward(model: Any, batch: list[str]) -> np.ndarray:
    """A sentence-transformers model's float32 embeddings of one batch (call under
    ``torch.inference_mode``)."""
    preprocess = getattr(model, "preprocess", None) or model.tokenize
    features = preprocess(batch)
    features = {k: (v.to(model.device) if hasattr(v, "to") else v) for k, v in features.items()}
    return model(features)["sentence_embedding"].float().cpu().numpy()


def at_precision(model: Any, precision: str, device: str) -> Any:
    """A loaded (fp32) sentence-transformers model converted to ``precision``."""
    if precision == "fp16":
        model.half()
    elif precision == "bf16":
        import torch

        model.to(torch.bfloat16)
    elif precision == "int8":
        if device != "cpu":
            raise ValueError(f"precision 'int8' is a CPU path, got device {device!r}; use fp16 on CUDA")
        import torch
        from torch.ao.quantization import per_channel_dynamic_qconfig

        # Per-channel weight scales keep vectors much closer to fp32 than one scale
        # per tensor (mean cosine 0.98 against 0.94 on the demo corpus), at the same speed.
        model = torch.ao.quantization.quantize_dynamic(
            model, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8
        )
    return model


def probe(model: Any, precision: str, device: str) -> np.ndarray:
    """The probe texts' vectors from the fp32 ``model`` run at ``precision`` (on a copy,
    so the model itself stays fp32 until the verdict)."""
    import copy

    import torch

    m = model if precision == "fp32" else at_precision(copy.deepcopy(model), precision, device)
    with torch.inference_mode():
        return forward(m, list(PROBES))


def device_id(device: str) -> str:
    """What names the device in auto's cache key: a GPU's name and compute capability
    (the CPU's flags are keyed separately)."""
    if not device.startswith("cuda"):
        return device
    import torch

    index = torch.device(device).index or 0
    return f"{device}|{torch.cuda.get_device_name(index)}|{torch.cuda.get_device_capability(index)}"


def loaded_from(model: Any) -> str | None:
    """The folder or hub name a loaded model came from (best effort: None)."""
    try:
        return str(model[0].auto_model.config._name_or_path)
    except Exception:  # noqa: BLE001 - best effort, only used for the weights hash
        return None
