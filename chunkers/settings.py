"""Chunker settings: one typed object per strategy, defaults readable here.

Token figures are cl100k (tiktoken) tokens. An article is the whole document as one
chunk: of the shared settings it takes none (a pooled article's windows overlap by the
embedder's ``pool_overlap``), only ``long_article``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from .segment import DEFAULT_SEGMENTER, SEGMENTERS


def _known_segmenter(name: str) -> str:
    SEGMENTERS.get(name)  # an unknown one is an error listing the known ones
    return name


# A name from the SEGMENTERS registry.
SegmenterName = Annotated[str, AfterValidator(_known_segmenter)]


class ChunkerSettings(BaseModel):
    """Shared shape: ``max_tokens`` per chunk, ``min_tokens`` below which a unit merges
    with a neighbour, and ``overlap`` tokens shared by the pieces of a split unit."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_tokens: int | None = Field(default=None, ge=8)
    min_tokens: int = Field(default=0, ge=0)
    overlap: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> "ChunkerSettings":
        if self.max_tokens is not None:
            if self.overlap >= self.max_tokens // 2:
                raise ValueError(
                    f"overlap must be under half of max_tokens ({self.max_tokens}), got {self.overlap}"
                )
            if self.min_tokens > self.max_tokens:
                raise ValueError(
                    f"min_tokens ({self.min_tokens}) must not exceed max_tokens ({self.max_tokens})"
                )
        return self


class SentenceSettings(ChunkerSettings):
    """One sentence per chunk; fragments under ``min_tokens`` (headings, "Yes.") join a
    neighbour; a sentence over ``max_tokens`` is cut at token boundaries."""

    max_tokens: int | None = Field(default=128, ge=8)
    min_tokens: int = 4
    overlap: int = 0
    # Which SEGMENTERS entry finds sentences (part of the chunker key: another
    # segmenter cuts other chunks).
    segmenter: SegmenterName = DEFAULT_SEGMENTER


class ParagraphSettings(ChunkerSettings):
    """One paragraph (blank-line separated block) per chunk; short ones such as headings
    join the next paragraph; long ones split at sentences, then tokens, with ``overlap``."""

    max_tokens: int | None = Field(default=256, ge=8)
    min_tokens: int = 24
    overlap: int = 32
    # Splits a paragraph over max_tokens at sentences (see SentenceSettings).
    segmenter: SegmenterName = DEFAULT_SEGMENTER


class ArticleSettings(ChunkerSettings):
    """The whole document as one chunk. ``long_article`` decides how a text longer than
    the model's window is embedded: ``pool`` averages windows that cover all of it,
    ``truncate`` embeds the first window only.

    ``max_tokens``, ``min_tokens`` and ``overlap`` shape no article: they keep their
    fixed values (part of the chunker parameters every stored article row was keyed
    by, so stored tables stay current), and another value is an error naming the one
    setting an article takes, rather than a setting accepted that changes nothing."""

    max_tokens: None = None
    min_tokens: int = 0
    overlap: int = 32
    long_article: Literal["pool", "truncate"] = "pool"

    @field_validator("min_tokens", "overlap")
    @classmethod
    def _fixed(cls, v: int, info) -> int:
        fixed = cls.model_fields[info.field_name].default
        if v != fixed:
            raise ValueError(f"an article is the whole document as one chunk, so {info.field_name} changes nothing "
                             "(a pooled article's windows overlap by the embedder's pool_overlap); the setting an "
                             "article takes: long_article (pool or truncate)")
        return v


DEFAULT_SETTINGS: dict[str, ChunkerSettings] = {
    "sentence": SentenceSettings(),
    "paragraph": ParagraphSettings(),
    "article": ArticleSettings(),
}
