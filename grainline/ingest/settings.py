"""The settings of one ingestion run (:class:`IngestSettings`) and the strategy names."""

from __future__ import annotations

from typing import Any, Iterable, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from grainline.chunkers import CHUNKERS, ChunkerSettings, settings_for
from grainline.embedding import EmbedderSettings
from grainline.readers import ReaderSettings
from grainline.redact import check_uri
from grainline.storage.chunks import DEFAULT_DB
from grainline.storage.maintenance import MaintenanceSettings

STRATEGIES = ("sentence", "paragraph", "article")


def parse_strategies(value: str | Iterable[str]) -> list[str]:
    """'sentence,paragraph' -> ['sentence', 'paragraph'], each checked against the registry."""
    return CHUNKERS.parse_names(value)


class IngestSettings(BaseModel):
    """Everything an ingestion run needs; the defaults are grainline's defaults."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: str
    strategies: list[str] = Field(default_factory=lambda: list(STRATEGIES))
    db: str = DEFAULT_DB
    # incremental: add and update what the source holds; full: also delete documents
    # of this source root that are gone from it.
    sync: Literal["incremental", "full"] = "incremental"
    long_article: Literal["pool", "truncate"] = "pool"
    chunker_overrides: dict[str, dict[str, Any]] = Field(default_factory=dict)
    batch_docs: int = Field(default=64, ge=1)
    export_parquet: bool = True
    parquet_dir: str | None = None
    # Default: one table per model (``ModelIdentity.table_name``). Evaluation datasets
    # use their own table per model so they never mix with production documents.
    table: str | None = None
    embedder: EmbedderSettings = Field(default_factory=EmbedderSettings)
    reader: ReaderSettings = Field(default_factory=ReaderSettings)
    # When a run fails: keep the batches it committed (each one whole documents), so a
    # re-run resumes where it stopped; or restore the table to its version before the run.
    on_error: Literal["keep", "restore"] = "keep"
    # How long a run waits for another process writing the same (local) table.
    lock_timeout_s: float = Field(default=6 * 3600, ge=0)
    # Compaction, pruning and indexes after every successful run (storage/maintenance.py).
    maintenance: MaintenanceSettings = Field(default_factory=MaintenanceSettings)
    # Other tables of the same model whose stored vectors may be reused by content hash
    # (an evaluation's sweep tables reuse the production table's vectors).
    reuse_from: list[str] = Field(default_factory=list)
    # Read and hash every file, even those the source manifest says are unchanged by
    # their stat (size, modification time, inode); the manifest is still updated.
    rehash: bool = False
    # Write to the production table the database's alias names (grainline promote),
    # embedding with that table's model, when the database has one; the default
    # model's table otherwise. Set when no model and no table were named (the CLI's
    # ingest and serve without --model); resolved when the run starts (plan.follow_alias),
    # so a scheduled run after a promotion writes to the promoted table.
    follow_alias: bool = False

    @field_validator("strategies", mode="before")
    @classmethod
    def _strategies(cls, v: Any) -> list[str]:
        return parse_strategies(v)

    @field_validator("db", "parquet_dir")
    @classmethod
    def _no_credentials(cls, v: str | None) -> str | None:
        # Credentials come from the environment; in a URI they would be recorded.
        return v if v is None else check_uri(v)

    @field_validator("source")
    @classmethod
    def _source_without_credentials(cls, v: str) -> str:
        # An object-store source (s3://bucket/prefix) takes its credentials from the
        # environment too.
        return check_uri(v, what="source")

    @model_validator(mode="after")
    def _chunker_overrides(self) -> "IngestSettings":
        unknown = set(self.chunker_overrides) - set(CHUNKERS.names())
        if unknown:
            raise ValueError(f"chunker_overrides for unknown strategies {sorted(unknown)}; known: {', '.join(CHUNKERS.names())}")
        self.chunker_settings()  # bad values fail here, naming the setting
        return self

    def chunker_settings(self) -> dict[str, ChunkerSettings]:
        """Each requested strategy's chunker settings, the overrides applied."""
        out = {}
        for s in self.strategies:
            overrides = dict(self.chunker_overrides.get(s, {}))
            if s == "article":
                overrides.setdefault("long_article", self.long_article)
            out[s] = settings_for(s, **overrides)
        return out
