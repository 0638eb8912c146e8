"""The ``grainline queries`` group: query sets imported from a file or generated from
the stored documents."""

from __future__ import annotations

from typing import Any

import typer

from grainline.cli.common import fail
from grainline.defaults import DEFAULT_DB, DEFAULT_MODEL


queries_app = typer.Typer(no_args_is_help=True, help="Query sets for your own documents: import or generate questions with gold spans in a chunks table.")


def _report_queryset(path: Any, qs: Any) -> None:
    from grainline.cli.common import printable
    from grainline.evaluation.querysets import match_lines

    for u in qs.notes:
        typer.echo(f"note {printable(u.row)}: {printable(u.reason)}")
    for u in qs.unresolved:
        typer.secho(f"unresolved {printable(u.row)}: {printable(u.reason)}", fg=typer.colors.YELLOW)
    for line in match_lines(qs.matches):
        typer.echo(printable(line))
    typer.echo(f"{len(qs.queries)} queries, {len(qs.unresolved)} unresolved -> {path} (version {qs.version}; "
               f"table {qs.provenance['table']} v{qs.provenance['table_version']}, generator {qs.provenance['generator']})")


@queries_app.command("import")
def queries_import(
    file: str = typer.Argument(..., help="CSV, TSV or JSONL with a 'question' column and any of doc_id, answer, evidence (optional id); or a Ragas test set, a LlamaIndex EmbeddingQAFinetuneDataset JSON, a BEIR folder."),
    fmt: str = typer.Option(None, "--format", help="grainline, ragas, llamaindex or beir (default: detected when only one fits)."),
    split: str = typer.Option(None, "--split", help="beir: the qrels split (default: test, or the only one)."),
    db: str = typer.Option(DEFAULT_DB, "--db", help="The database whose chunks table the queries are for."),
    out: str = typer.Option(None, "--out", help="The query set to write (default: FILE's name + .queryset.jsonl)."),
    table: str = typer.Option(None, "--table", help="The chunks table (default: the model's)."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", help="Names the default table."),
    head: str = typer.Option(None, "--head", help="A tuned head folder: its table is the one the queries are for."),
    fuzzy_threshold: float = typer.Option(90.0, "--fuzzy-threshold", min=0, max=100, help="rapidfuzz partial_ratio an evidence passage needs when it matches neither exactly nor up to whitespace/case."),
) -> None:
    """Import hand-written questions; evidence passages become character spans in the
    stored document text. Every row that cannot be used is listed with its reason."""
    from grainline.api import import_queryset
    from grainline.errors import TerminalError

    try:
        path, qs, _ = import_queryset(file, db, out, table=table, model=model, head=head, fuzzy_threshold=fuzzy_threshold,
                                      fmt=fmt, split=split)
    except (ValueError, FileNotFoundError, OSError, UnicodeDecodeError, TerminalError) as exc:
        fail(str(exc))
    _report_queryset(path, qs)
    if not qs.queries:
        fail(f"no row of {file} could be used; see the reasons above", code=1)


@queries_app.command("generate")
def queries_generate(
    source: str = typer.Option("headings", "--from", help="headings: offline, Markdown/HTML headings as queries and their sections as gold spans."),
    llm: bool = typer.Option(False, "--llm", help="Ask an OpenAI-compatible chat-completions endpoint instead (--base-url, --model)."),
    db: str = typer.Option(DEFAULT_DB, "--db", help="The database whose chunks table the queries are for."),
    out: str = typer.Option(None, "--out", help="The query set to write (default: headings.queryset.jsonl or llm.queryset.jsonl)."),
    table: str = typer.Option(None, "--table", help="The chunks table (default: the model's)."),
    embed_model: str = typer.Option(DEFAULT_MODEL, "--embed-model", help="Embedding model: names the default table."),
    head: str = typer.Option(None, "--head", help="A tuned head folder: its table is the one the queries are for."),
    base_url: str = typer.Option(None, "--base-url", help="--llm: e.g. http://localhost:11434/v1 (Ollama) or http://localhost:8000/v1 (vLLM); the key only from GRAINLINE_LLM_API_KEY or OPENAI_API_KEY."),
    llm_model: str = typer.Option(None, "--model", help="--llm: the chat model's name at that endpoint."),
    per_doc: int = typer.Option(3, "--per-doc", min=1, help="--llm: at most this many questions per document."),
    sample_docs: int = typer.Option(None, "--sample-docs", min=1, help="--llm: a seeded sample of N documents."),
    seed: int = typer.Option(0, "--seed", help="Seed of the --sample-docs draw."),
    cache: str = typer.Option(None, "--cache", help="--llm: response cache folder (default: OUT + .cache); an interrupted generation resumes from it."),
    retries: int = typer.Option(4, "--retries", min=0, help="--llm: retries of a transient HTTP error (429, 5xx, timeout, refused), with doubling waits from 1 s."),
) -> None:
    """Generate a query set from the stored documents."""
    from grainline.api import generate_queryset
    from grainline.evaluation.querysets import QuerySetError

    if not llm and source != "headings":
        fail(f"--from {source!r}: the offline generator is 'headings' (or pass --llm)")
    if llm and (not base_url or not llm_model):
        fail("--llm needs --base-url URL and --model NAME (the chat model)")
    try:
        settings = None
        if llm:
            from grainline.evaluation.llmgen import LlmSettings

            target = out or "llm.queryset.jsonl"
            settings = LlmSettings(base_url=base_url, model=llm_model, per_doc=per_doc, sample_docs=sample_docs, seed=seed,
                                   cache_dir=cache or f"{target}.cache", retries=retries)
        path, qs, info = generate_queryset(db, out, table=table, model=embed_model, head=head, llm=settings,
                                           echo=lambda m: typer.echo(m, err=True))
    except (ValueError, FileNotFoundError, QuerySetError) as exc:
        fail(str(exc))
    _report_queryset(path, qs)
    if info.get("error"):
        fail(f"generation stopped: {info['error']}; the {len(qs.queries)} questions finished are in {path}, "
              "and a re-run resumes from the cached responses", code=1)
    if llm:
        typer.echo(f"tokens: {info['prompt_tokens']} prompt, {info['completion_tokens']} completion; "
                   f"{info['requests']} requests, {info['cached']} cached responses")
    if not qs.queries:
        fail("no query could be generated; see the reasons above", code=1)
