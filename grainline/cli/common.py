"""What every command shares: the help texts of the common options, the argument-check
context (a bad value is one line and exit code 2), one-line errors, starting the
Prefect server a flow needs, and printing helpers. Heavy modules are imported inside
the functions that need them."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, NoReturn

import typer

from grainline.cli import checks as chk


# Rich markup would read [openvino] as a style tag and drop it: escaped.
BACKEND_HELP = ('openvino (CPU; pip install "grainline\\[openvino]"), torch, or auto: on a CPU the faster '
                'of the two, timed once per machine; torch on a GPU and for int8.')
DB_HELP = "LanceDB URI (local folder, s3://...)."
MODEL_HELP = "sentence-transformers name or local path (each model has its own table)."
DEVICE_HELP = "auto, cpu, cuda, cuda:N or mps."
PRECISION_HELP = "auto (fp16 on CUDA, else fp32), fp32, fp16, bf16, int8 (CPU; its own table)."


@contextmanager
def checked() -> Iterator[None]:
    """Argument checks: a bad value is one line and exit code 2, before anything starts."""
    try:
        yield
    except chk.ArgumentError as exc:
        fail(str(exc))


def check_embedder_args(device: str, precision: str, backend: str) -> None:
    """The embedder options every embedding command takes; openvino only where it can run."""
    chk.device(device)
    chk.choice("--precision", precision, chk.PRECISIONS)
    chk.choice("--backend", backend, chk.BACKENDS)
    if backend == "openvino":
        import importlib.util

        if device not in ("auto", "cpu"):
            raise chk.ArgumentError(f"--backend openvino runs on the CPU, got --device {device!r}; use --backend torch")
        if importlib.util.find_spec("openvino") is None:
            raise chk.ArgumentError('--backend openvino needs OpenVINO: pip install "grainline[openvino]"')


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``error: MESSAGE`` (credentials redacted) on stderr and exit with ``code``."""
    from grainline.redact import redact_text

    # Errors often quote the value received, and a --db URI may carry credentials.
    typer.secho(f"error: {redact_text(message)}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def damage_code(exc: BaseException) -> int:
    """The exit code for an error: 1 for a damaged table (the command was right, the
    data is not), 2 for everything else a command refuses."""
    from grainline.storage.damage import TableDamaged

    return 1 if isinstance(exc, TableDamaged) else 2


def one_line(exc: BaseException) -> str:
    """An error as one line: the ledger's account of the run when the error carries it
    (the real error, then whether the table was kept or restored, and the undo
    command), else its type and message."""
    notes = [n for n in getattr(exc, "__notes__", []) if n]
    text = notes[-1] if notes else f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())


def interrupted(exc: BaseException) -> None:
    """Ctrl-C or SIGTERM: the run recorded itself as interrupted; exit 128 + signal."""
    import signal

    from grainline.ingest import interrupt_signal

    sig = interrupt_signal(exc) or signal.SIGINT
    notes = [n for n in getattr(exc, "__notes__", []) if n]
    fail(" ".join((notes[-1] if notes else f"interrupted by {signal.Signals(sig).name}").split()), code=128 + sig)


def use_server() -> None:
    """Before a flow runs: use PREFECT_API_URL's server, else grainline's kept local one
    (started the first time), so no command pays for a temporary server."""
    from grainline.server import ServeError, use_prefect_server

    try:
        use_prefect_server(announce=lambda msg: typer.echo(msg, err=True))
    except ServeError as exc:
        fail(str(exc))
    except (RuntimeError, TimeoutError) as exc:
        fail(f"could not start the local Prefect server: {str(exc).splitlines()[0]}", code=1)


def print_hits(query: str, strategy: str, hits: list, as_json: bool = False) -> None:
    """Search hits as JSON lines, or ranked one-line snippets under a heading."""
    import json
    import textwrap

    if as_json:
        for h in hits:
            row = {**h.row, "metadata": json.loads(h.row["metadata"]) if h.row.get("metadata") else {}}
            typer.echo(json.dumps({"rank": h.rank, "score": round(h.score, 4), **row}, ensure_ascii=False))
        return
    typer.secho(f"\n{strategy} chunks for: {query!r}", bold=True)
    if not hits:
        typer.echo("  (no hits)")
    for h in hits:
        text = " ".join(h.row["text"].split())
        snippet = textwrap.shorten(text, width=150, placeholder=" ...")
        typer.echo(f"  {h.rank}. {h.score:.3f}  {printable(h.row['doc_id'])} [{h.row['start']}:{h.row['end']}]  {printable(snippet)}")
        if "matched" in h.row:  # small-to-big: the hit inside it
            m = h.row["matched"]
            typer.echo(f"       via {m['strategy']} [{m['start']}:{m['end']}]: "
                       + printable(textwrap.shorten(" ".join(m["text"].split()), width=120, placeholder=" ...")))


def printable(text: str) -> str:
    """Text safe to print on a terminal, on one line: control characters (newlines in
    file names, escape sequences in documents) and bidi controls shown escaped."""
    import unicodedata

    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or (c == " ") else
                   (c.encode("unicode_escape").decode("ascii") if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") else c)
                   for c in text)


def validation_line(exc: Any) -> str:
    """A pydantic error as one line: the field and the reason of the first problem."""
    err = exc.errors()[0]
    where = ".".join(str(x) for x in err.get("loc", ())) or "settings"
    return f"{where}: {err.get('msg', exc)}"


# Settings fields whose command-line option has another name.
_OPTION_OF = {"strategies": "--strategy", "reports_dir": "--reports", "small_to_big": "--small-to-big"}


def validation_message(err: dict) -> str:
    """One readable line for one pydantic error: the option and the reason."""
    loc = [str(x) for x in err.get("loc", ())]
    where = _OPTION_OF.get(loc[0], "--" + loc[0].replace("_", "-")) if loc else ""
    msg = " ".join(str(err.get("msg", "")).removeprefix("Value error, ").split())
    return f"{where}: {msg}" if where else msg
