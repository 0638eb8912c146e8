"""Checks of command-line values, run before anything heavy is imported and before
any Prefect server or flow run starts, so a typo costs a fraction of a second.

Plain choices (devices, precisions, ...) are listed here, and tests/cli/test_cli_args.py
holds each list against the ``Literal`` of the settings field it guards; named
things (strategies, retrieval methods, dataset kinds, readers) are looked up in
their own registries. Every check raises :class:`ArgumentError`, one line naming the
option, the value and the valid ones."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterable

from grainline.errors import TerminalError

DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
PRECISIONS = ("auto", "fp32", "fp16", "bf16", "int8")
BACKENDS = ("auto", "torch", "openvino")
SYNC_MODES = ("incremental", "full")
LONG_ARTICLE = ("pool", "truncate")
ON_ERROR = ("keep", "restore")
RUNNERS = ("local", "dask", "dask://HOST:PORT")
RUN_KINDS = ("all", "production", "evaluation")
EVAL_PREFER = ("cost", "quality")

_MAGIC = re.compile(r"[*?\[]")


class ArgumentError(TerminalError, ValueError):
    """A command-line value that is not one of the valid ones (exit code 2)."""


def choice(option: str, value: str, valid: Iterable[str]) -> str:
    """``value`` when it is one of ``valid``, else an ArgumentError naming both."""
    valid = tuple(valid)
    if value not in valid:
        raise ArgumentError(f"{option} {value!r} is not valid; valid: {', '.join(valid)}")
    return value


def eval_costs(value: str) -> list[str]:
    """``--cost``: comma-separated cost names, each a known one (the list lives with the
    costs; importing it loads nothing heavy)."""
    from grainline.evaluation.costs import COST_NAMES

    items = [p.strip() for p in value.split(",") if p.strip()]
    for name in items or [value]:
        if name not in COST_NAMES:
            raise ArgumentError(f"--cost {name!r} is not valid; valid: {', '.join(COST_NAMES)}")
    return items


def device(value: str, option: str = "--device") -> str:
    base, _, index = value.partition(":")
    if base == "cuda" and index:
        if not index.isdigit():
            raise ArgumentError(f"{option} {value!r} is not valid; valid: {', '.join(DEVICES)}")
        return value
    if value not in DEVICES or value == "cuda:N":
        raise ArgumentError(f"{option} {value!r} is not valid; valid: {', '.join(DEVICES)}")
    return value


def runner(value: str) -> str:
    if value in ("local", "dask") or value.startswith(("dask://", "tcp://", "tls://")):
        return value
    raise ArgumentError(f"--runner {value!r} is not valid; valid: {', '.join(RUNNERS)}")


def _names(option: str, value: str, valid: list[str], kind: str) -> list[str]:
    items = [s.strip() for s in value.split(",") if s.strip()]
    if not items:
        raise ArgumentError(f"{option} is empty; valid: {', '.join(valid)}")
    bad = [s for s in items if s not in valid]
    if bad:
        raise ArgumentError(f"{option}: unknown {kind} {', '.join(map(repr, bad))}; valid: {', '.join(valid)}")
    return list(dict.fromkeys(items))


def strategies(value: str, option: str = "--strategy") -> list[str]:
    """Comma-separated chunking strategies, each one registered."""
    from grainline.chunkers.base import CHUNKERS
    import grainline.chunkers.strategies  # noqa: F401  (fills the registry)

    return _names(option, value, CHUNKERS.names(), CHUNKERS.kind)


def eval_methods(value: str, option: str = "--method") -> list[str]:
    """Comma-separated evaluation retrieval methods, each one registered."""
    from grainline.evaluation.retrieval import RETRIEVERS

    return _names(option, value, RETRIEVERS.names(), RETRIEVERS.kind)


def search_method(value: str, option: str = "--method") -> str:
    """One search method of grainline.search's registry."""
    from grainline.search import SEARCH_METHODS

    return choice(option, value, SEARCH_METHODS.names())


def dataset(value: str) -> str:
    """``KIND:PATH`` with a known kind and an existing path."""
    from grainline.evaluation.datasets import DATASET_KINDS

    kind, sep, path = value.partition(":")
    if not sep or kind not in DATASET_KINDS:
        raise ArgumentError(f"--dataset {value!r}: unknown dataset kind {kind!r}; expected KIND:PATH with KIND one of "
                            f"{', '.join(DATASET_KINDS)}")
    if not path:
        raise ArgumentError(f"--dataset {value!r}: no path after {kind}:")
    if not Path(path).exists():
        raise ArgumentError(f"--dataset {value!r}: {path} does not exist")
    return value


def chunk_options(items: list[str]) -> dict[str, dict[str, object]]:
    """``['paragraph.max_tokens=200']`` -> ``{'paragraph': {'max_tokens': 200}}``, each
    strategy registered, each setting a field of its settings type and its value valid."""
    import pydantic

    from grainline.chunkers import SETTINGS_TYPES, CHUNKERS

    out: dict[str, dict[str, object]] = {}
    for item in items:
        key, eq, raw = item.partition("=")
        strategy, dot, name = key.partition(".")
        if not eq or not dot or not name:
            raise ArgumentError(f"--chunk expects STRATEGY.SETTING=VALUE (e.g. paragraph.max_tokens=200), got {item!r}")
        if strategy not in CHUNKERS:
            raise ArgumentError(f"--chunk {item!r}: unknown strategy {strategy!r}; valid: {', '.join(CHUNKERS.names())}")
        fields = SETTINGS_TYPES[strategy].model_fields
        if name not in fields:
            raise ArgumentError(f"--chunk {item!r}: {strategy} has no setting {name!r}; valid: {', '.join(sorted(fields))}")
        value: object = None if raw.lower() == "none" else (int(raw) if raw.lstrip("-").isdigit() else raw)
        out.setdefault(strategy, {})[name] = value
    for strategy, overrides in out.items():
        try:
            SETTINGS_TYPES[strategy](**overrides)
        except pydantic.ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err.get("loc", ())) or "settings"
            msg = str(err["msg"]).removeprefix("Value error, ")
            raise ArgumentError(f"--chunk {strategy}.{where}: {msg}") from None
    return out


def source(value: str) -> str:
    """A folder, a file with a reader, a glob whose base folder exists, or an
    object-store prefix (``s3://bucket/prefix``) whose store answers a listing with the
    environment's credentials."""
    if "://" in value:
        from grainline.readers.object_store import ObjectSourceError, check_object_source, is_object_uri

        from grainline.redact import redact_uri

        if not is_object_uri(value):
            raise ArgumentError(f"source {redact_uri(value)!r}: of URIs only s3://BUCKET/PREFIX is read "
                                "(a folder, a file or a glob otherwise)")
        try:
            return check_object_source(value)
        except ObjectSourceError as exc:
            raise ArgumentError(str(exc)) from None
    path = Path(value)
    if path.is_dir():
        return value
    if path.exists() or path.is_symlink():
        from grainline.readers import READERS

        if path.suffix.lower() not in READERS:
            raise ArgumentError(f"source {value!r}: unsupported file type {path.suffix or '(none)'!r}; "
                                f"supported: {', '.join(sorted(READERS))}")
        return value
    if _MAGIC.search(value):
        base = []
        for part in path.parts:
            if _MAGIC.search(part):
                break
            base.append(part)
        root = Path(*base) if base else Path(".")
        if not root.is_dir():
            raise ArgumentError(f"source {value!r}: the glob's base folder {str(root)!r} does not exist")
        return value
    raise ArgumentError(f"source {value!r} does not exist (a folder, a file or a glob such as 'docs/**/*.md')")


def db_uri(db: str) -> str:
    """A database URI must not carry credentials (they come from the environment);
    checked first, so the refusal names the URI redacted before anything else."""
    from grainline.redact import check_uri

    try:
        check_uri(db)
    except ValueError as exc:
        raise ArgumentError(str(exc)) from None
    return db


def existing_db(db: str) -> str:
    """A database a command only reads: a local one must exist (object stores are
    checked when opened)."""
    if "://" in db and not db.startswith("file://"):
        return db
    path = Path(db.removeprefix("file://"))
    if not path.is_dir():
        raise ArgumentError(f"--db {db!r}: no database there (run `grainline ingest ... --db {db}` first)")
    return db


def positive(option: str, value: int | float) -> None:
    if value < 1:
        raise ArgumentError(f"{option} must be at least 1, got {value}")


def readable_file(option: str, value: str) -> str:
    if not os.path.exists(value):
        raise ArgumentError(f"{option} {value!r} does not exist")
    return value
