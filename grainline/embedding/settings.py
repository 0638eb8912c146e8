"""The embedding settings: model, device, precision, backend, batching, head."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from grainline.defaults import DEFAULT_MODEL

from .head import check_head_folder

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "fp16", "bf16", "int8")


class EmbedderSettings(BaseModel):
    """How chunks are embedded. ``model`` is any sentence-transformers name or local
    path; the default is all-MiniLM-L6-v2, loaded offline from its PyPI package."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = DEFAULT_MODEL
    device: str = "auto"
    # auto: fp16 on CUDA, bf16 on CPUs with bf16 matrix units, else fp32, each checked
    # once per model and machine on probe texts (embedding/precision.py). int8: dynamic
    # int8 quantisation of the linear layers, a CPU fast path whose vectors get a table
    # of their own.
    precision: Literal["auto", "fp32", "fp16", "bf16", "int8"] = "auto"
    # The cosine against fp32 every probe text must reach for auto to keep a faster
    # precision: fp16 and bf16 vectors share the fp32 table, so they must be interchangeable.
    auto_min_cosine: float = Field(default=0.999, gt=0, le=1)
    # auto: on a CPU, whichever of torch and OpenVINO embeds faster on this machine
    # (timed once per model and machine, cached; both give torch fp32's vectors, so they
    # share a table); torch on a GPU, for fp16 and for int8 (embedding/backends.py).
    # torch: sentence-transformers as is. openvino (CPU; pip install "grainline[openvino]"):
    # the model converted once to OpenVINO IR and cached; with int8, quantised by NNCF
    # on calibration texts, and its vectors get a table of their own.
    backend: Literal["auto", "torch", "openvino"] = "auto"
    # int8 calibration texts for the openvino backend (anything grainline reads);
    # None: the bundled demo corpus.
    calibration: str | None = None
    batch_size: int = Field(default=64, ge=1, le=4096)  # most sequences in one forward pass
    # Most (padded) tokens in one forward pass; None: 4096 on CPU (small batches stay in
    # cache: about 20% faster than sentence-transformers' encode), 65536 on GPUs.
    token_budget: int | None = Field(default=None, ge=256)
    # Overlap between the windows of a pooled long article, in model tokens.
    pool_overlap: int = Field(default=32, ge=0)
    show_progress: bool = False
    # A head folder written by `grainline tune train`: applied to every final vector,
    # so the tuned model gets its own identity and table.
    head: str | None = None

    @field_validator("head")
    @classmethod
    def _head(cls, v: str | None) -> str | None:
        if v is None:
            return None
        return str(check_head_folder(v).resolve())

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v.split(":")[0] not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(DEVICES)} (or cuda:N), got {v!r}")
        return v

    @model_validator(mode="after")
    def _backend(self) -> "EmbedderSettings":
        if self.backend == "openvino":
            if self.device not in ("auto", "cpu"):
                raise ValueError(f"backend 'openvino' runs on the CPU, got device {self.device!r}; use backend 'torch'")
            if self.precision == "fp16":
                raise ValueError("backend 'openvino' takes precision auto, fp32, bf16 or int8, got 'fp16'")
        if self.calibration is not None and (self.backend, self.precision) != ("openvino", "int8"):
            raise ValueError("calibration texts are for backend 'openvino' with precision int8")
        return self
