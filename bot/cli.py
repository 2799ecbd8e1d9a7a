"""`expertbot`: the command line. Each command is a thin shell over the chat core, the knowledge base or the
job client; results go to stdout (JSON with --json), progress and diagnostics to stderr."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from agent.settings import ConfigError, Settings, get_settings
from agent.types import TENANT_WIDE, Audience, Route

if TYPE_CHECKING:
    from agent.knowledge.store import SearchMode

app = typer.Typer(help="expertbot: your company's domain expert in chat.", no_args_is_help=True)


@app.callback()
def _logging(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show debug logs.")] = False) -> None:
    from agent.logging_setup import setup_logging

    try:
        settings: Settings | None = get_settings()
    except ConfigError:
        settings = None  # the command itself reports the bad setting
    fmt = settings.log_format if settings else "text"
    setup_logging(settings, level=logging.DEBUG if verbose else logging.WARNING, fmt=fmt)


docs_app = typer.Typer(help="List or forget documents.", no_args_is_help=True)
eval_app = typer.Typer(help="Measure quality on an evaluation set.", no_args_is_help=True)
bench_app = typer.Typer(help="Measure speed.", no_args_is_help=True)
app.add_typer(docs_app, name="docs")
app.add_typer(eval_app, name="eval")
app.add_typer(bench_app, name="bench")
teams_app = typer.Typer(help="The Microsoft Teams endpoint and its app package.", no_args_is_help=True)
app.add_typer(teams_app, name="teams")

err = Console(stderr=True)
out = Console()

ScopeOpt = Annotated[
    str | None, typer.Option("--scope", help=f"Conversation scope; '{TENANT_WIDE}' means tenant-wide.")
]
TenantOpt = Annotated[str | None, typer.Option("--tenant", help="Workspace / team id.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]


def _settings() -> Settings:
    try:
        return get_settings()
    except ConfigError as exc:
        err.print(f"[red]configuration error:[/] {exc}")
        raise typer.Exit(2) from None


def _audience(settings: Settings, tenant: str | None, scope: str | None) -> Audience:
    return Audience(tenant or settings.default_tenant, scope or settings.default_scope)


def _print_json(data: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False) + "\n")


def _fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[red]error:[/] {message}")
    return typer.Exit(code)


@app.command()
def up(
    chat: Annotated[bool, typer.Option("--chat/--no-chat", help="Open the chat console once started.")] = True,
    teams: Annotated[bool, typer.Option("--teams/--no-teams", help="Serve the Teams endpoint too.")] = True,
) -> None:
    """Start the local stack (Milvus Lite, Redis unless REDIS_URL is set, a worker, the Teams endpoint)."""
    from bot.localstack import LocalStack, StackError

    settings = _settings()
    try:
        with LocalStack(settings, teams=teams, training=True, slack=True) as stack:
            if chat:
                from bot.console import run_console

                run_console(settings)
            else:
                err.print("stack is up; press Ctrl-C to stop it")
                stack.wait()
    except KeyboardInterrupt:
        pass
    except StackError as exc:
        raise _fail(str(exc)) from None


@app.command()
def chat(tenant: TenantOpt = None, scope: ScopeOpt = None) -> None:
    """Chat with the bot in this terminal (needs the stack: `expertbot up --no-chat` in another one)."""
    from bot.console import run_console

    settings = _settings()
    run_console(settings, _audience(settings, tenant, scope))


@app.command()
def slack() -> None:
    """Run the Slack app: Socket Mode when SLACK_APP_TOKEN is set, else HTTP mode on /slack/events."""
    import asyncio

    from slack_sdk.errors import SlackApiError

    from bot.slack.serve import serve

    logging.getLogger("bot").setLevel(logging.INFO)
    try:
        asyncio.run(serve(_settings()))
    except ConfigError as exc:
        raise _fail(str(exc), 2) from None
    except SlackApiError as exc:
        raise _fail(f"Slack refused the connection ({exc.response.get('error')}): check the tokens in .env") from None
    # Answer threads still waiting on Milvus or Redis must not keep a stopped app alive: what matters is stored.
    logging.shutdown()
    os._exit(0)


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders to share with the bot.")],
    tenant: TenantOpt = None,
    scope: ScopeOpt = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the jobs and show their progress.")] = False,
) -> None:
    """Queue documents for ingestion by the workers."""
    from bot.jobs import follow_jobs, submit_files

    settings = _settings()
    audience = _audience(settings, tenant, scope)
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise _fail(f"no such file or folder: {', '.join(missing)}")
    # A file's document id is its name, as when it is shared in chat; inside a folder, its relative path.
    files = [(path, path.name) for path in paths if path.is_file()] + [
        (p, p.relative_to(path).as_posix())
        for path in paths
        if path.is_dir()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    ]
    jobs = submit_files(settings, audience, files, err)
    err.print(f"queued {len(jobs)} document(s) for {audience.tenant}/{audience.scope}")
    if not wait:
        for job_id, name in jobs.items():
            out.print(f"{job_id}  {name}")
        return
    failed = follow_jobs(jobs, err)
    if failed:
        raise typer.Exit(1)


@app.command()
def ask(
    question: str,
    tenant: TenantOpt = None,
    scope: ScopeOpt = None,
    route: Annotated[str, typer.Option(help="auto, docs (retrieval) or expert (domain model)")] = "auto",
    thread: Annotated[str, typer.Option(help="Conversation id: the same id keeps the context.")] = "cli",
    as_json: JsonOpt = False,
) -> None:
    """Ask one question through the chat core, as a chat surface would."""
    from agent.chat import make_chat_core
    from agent.types import ChatRequest
    from bot.console import render

    forced: dict[str, Route | None] = {"auto": None, "docs": "retrieve", "expert": "domain"}
    if route not in forced:
        raise _fail("--route must be auto, docs or expert", 2)
    settings = _settings()
    request = ChatRequest(
        text=question,
        audience=_audience(settings, tenant, scope),
        thread=thread,
        forced_route=forced[route],
    )
    reply = make_chat_core(settings).answer(request)
    if as_json:
        _print_json({**reply.__dict__, "sources": [s.__dict__ for s in reply.sources]})
    else:
        render(reply, out)


@app.command()
def search(
    question: str,
    tenant: TenantOpt = None,
    scope: ScopeOpt = None,
    k: Annotated[int, typer.Option("-k", min=1, max=50)] = 5,
    mode: Annotated[str, typer.Option(help="hybrid, dense or bm25")] = "hybrid",
    as_json: JsonOpt = False,
) -> None:
    """Show the best passages for a question, as the bot would see them."""
    from agent.knowledge.service import open_knowledge

    settings = _settings()
    modes: dict[str, SearchMode] = {"hybrid": "hybrid", "dense": "dense", "bm25": "bm25"}
    if mode not in modes:
        raise _fail("--mode must be hybrid, dense or bm25", 2)
    hits = open_knowledge(settings).search(_audience(settings, tenant, scope), question, k=k, mode=modes[mode])
    if as_json:
        _print_json({"hits": [h.__dict__ for h in hits]})
        return
    if not hits:
        out.print("nothing found in the documents visible from this scope")
    for i, h in enumerate(hits, 1):
        out.print(
            f"[bold][{i}] {h.title}[/] — {h.heading or '(top)'}  [dim]{h.doc_id} · scope {h.scope} · {h.score:.3f}[/]"
        )
        out.print("    " + " ".join(h.text.split())[:300])


@docs_app.command("list")
def docs_list(tenant: TenantOpt = None, scope: ScopeOpt = None, as_json: JsonOpt = False) -> None:
    """Documents visible from a scope (all of the tenant's without --scope)."""
    from agent.knowledge.service import open_knowledge

    settings = _settings()
    tenant_id = tenant or settings.default_tenant
    scopes = Audience(tenant_id, scope).visible_scopes if scope else None
    docs = open_knowledge(settings).store.list_documents(tenant_id, scopes)
    if as_json:
        _print_json({"documents": [d.__dict__ for d in docs]})
        return
    table = Table("scope", "document", "title", "chunks")
    for d in docs:
        table.add_row(d.scope, d.doc_id, d.title, str(d.chunks))
    out.print(table)


@docs_app.command("forget")
def docs_forget(doc_id: str, tenant: TenantOpt = None, scope: ScopeOpt = None) -> None:
    """Remove a document (every chunk of it) from one scope."""
    from agent.knowledge.service import open_knowledge

    settings = _settings()
    removed = open_knowledge(settings).store.forget(_audience(settings, tenant, scope), doc_id)
    if not removed:
        raise _fail(f"no document {doc_id!r} in that scope (see `expertbot docs list`)")
    out.print(f"forgot {doc_id}: {removed} chunks removed")


@docs_app.command("migrate")
def docs_migrate() -> None:
    """Move a knowledge base built by expertbot 0.1 (one collection) into the audience buckets; safe to rerun."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from agent.knowledge.service import open_knowledge

    store = open_knowledge(_settings()).store
    if not store.needs_migration():
        err.print(f"nothing to migrate: {store.collection!r} already uses the audience buckets")
        return
    with Progress("moving passages", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err) as bars:
        task = bars.add_task("migrate", total=None)
        moved = store.migrate(lambda done, total: bars.update(task, completed=done, total=total))
    store.ensure_ready()
    out.print(f"moved {moved} passages into {len(store.buckets())} audience buckets")


@app.command()
def status(as_json: JsonOpt = False) -> None:
    """Health of Redis, Milvus and the workers, with queue depths and knowledge-base size."""
    from bot.health import check_health

    report = check_health(_settings())
    if as_json:
        _print_json(report)
    else:
        for key, value in report.items():
            out.print(f"{key:>12}: {value}")
    if not report.get("ok"):
        raise typer.Exit(1)


@eval_app.command("retrieval")
def eval_retrieval(
    corpus: Annotated[Path, typer.Option(exists=True, file_okay=False, help="Folder of documents.")],
    qa: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="Questions, one JSON object a line.")],
    k: Annotated[int, typer.Option(help="Report recall at this k (besides 1 and 5).")] = 5,
    all_modes: Annotated[bool, typer.Option("--all-modes", help="Also score dense-only and BM25-only.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Ingest a corpus into a temporary knowledge base and score retrieval on the questions."""
    from agent.evaluation import evaluate_retrieval

    modes: tuple[Any, ...] = ("hybrid", "dense", "bm25") if all_modes else ("hybrid",)
    report = evaluate_retrieval(_settings(), corpus, qa, modes=modes, k=k)
    if as_json:
        _print_json(report)
        return
    table = Table("mode", "R@1", "R@5", f"R@{k}", "MRR@10", "R@5 en", "R@5 other", "ms/question")
    for mode, r in report["by_mode"].items():
        table.add_row(
            mode,
            str(r["recall_at_1"]),
            str(r["recall_at_5"]),
            str(r[f"recall_at_{k}"]),
            str(r["mrr_at_10"]),
            str(r["recall_at_5_en"]),
            str(r["recall_at_5_other"]),
            str(r["search_ms_mean"]),
        )
    out.print(table)
    out.print(f"{report['questions']} questions, {report['chunks']} chunks, model {report['embedding_model']}")


@eval_app.command("routing")
def eval_routing(
    data: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="Labelled messages: text and route.")],
    corpus: Annotated[
        Path | None, typer.Option(exists=True, file_okay=False, help="Fill a knowledge base first (search signal).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Route every labelled message; report accuracy, per-route precision and recall, and the confusion matrix."""
    from agent.evaluation import routing_report

    try:
        report = routing_report(_settings(), data, corpus)
    except ValueError as exc:
        raise _fail(str(exc), 2) from None
    if as_json:
        _print_json(report)
        return
    table = Table("gold \\ predicted", *report["confusion"])
    for gold, row in report["confusion"].items():
        table.add_row(gold, *(str(v) for v in row.values()))
    out.print(table)
    for route, m in report["per_route"].items():
        out.print(f"{route:>10}: precision {m['precision']:.2f}  recall {m['recall']:.2f}  (n={m['support']})")
    for e in report["errors"]:
        err.print(f"[dim]{e['gold']} → {e['predicted']}: {e['text']}  ({e['why']})[/]")
    out.print(f"accuracy {report['accuracy']:.3f} on {report['n']} messages, {report['ms_per_message']} ms each")


@eval_app.command("answers")
def eval_answers(
    corpus: Annotated[Path, typer.Option(exists=True, file_okay=False, help="Folder of documents.")],
    qa: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="Questions with answer_keys and gold_docs.")],
    route: Annotated[str, typer.Option(help="auto, or docs to force retrieval for every question")] = "auto",
    as_json: JsonOpt = False,
) -> None:
    """Answer every question through the chat core; score answer keys quoted and gold documents cited."""
    from agent.evaluation import evaluate_answers

    if route not in ("auto", "docs"):
        raise _fail("--route must be auto or docs", 2)
    report = evaluate_answers(_settings(), corpus, qa, forced="retrieve" if route == "docs" else None)
    if as_json:
        _print_json(report)
        return
    for miss in report.pop("misses"):
        err.print(f"[dim]miss ({miss['route']}, key={miss['key']}, gold={miss['gold']}): {miss['question']}[/]")
    out.print(report)


@bench_app.command("ingest")
def bench_ingest(
    corpus: Annotated[Path, typer.Option(exists=True, file_okay=False)],
    processes: Annotated[
        int | None, typer.Option("--processes", min=1, help="Worker processes (default: EXPERTBOT_WORKER_CONCURRENCY).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """End-to-end ingestion speed (Redis → worker → Milvus) beside raw embedding speed on the same chunks."""
    from bot.bench.speed import bench_ingest as run

    settings = _settings()
    if processes is not None:
        settings = settings.model_copy(update={"worker_concurrency": processes})
    report = run(settings, corpus)
    _print_json(report) if as_json else out.print(report)


@bench_app.command("search")
def bench_search(
    chunks: Annotated[int, typer.Option("--chunks", min=100)] = 100_000,
    queries: Annotated[int, typer.Option("--queries", min=10)] = 1000,
    corpus: Annotated[
        Path | None,
        typer.Option(exists=True, file_okay=False, help="Draw passages from this corpus' word frequencies."),
    ] = None,
    qa: Annotated[Path | None, typer.Option(exists=True, dir_okay=False, help="Ask these questions.")] = None,
    baseline: Annotated[
        bool,
        typer.Option("--baseline/--no-baseline", help="Time BM25 and hybrid again with milvus-lite's own BM25 scorer."),
    ] = True,
    as_json: JsonOpt = False,
) -> None:
    """Latency of a filtered top-5 search (hybrid, dense-only, BM25-only) over N chunks."""
    from bot.bench.speed import ZIPF_TEXT, corpus_text
    from bot.bench.speed import bench_search as run

    if (corpus is None) != (qa is None):
        raise _fail("--corpus and --qa go together (passages from one, questions from the other)", 2)
    settings = _settings()
    text = corpus_text(settings, corpus, qa) if corpus and qa else ZIPF_TEXT
    report = run(settings, chunks, queries, text=text, upstream_baseline=baseline)
    _print_json(report) if as_json else out.print(report)


@teams_app.command("serve")
def teams_serve() -> None:
    """Serve POST /api/messages for Teams (EXPERTBOT_TEAMS_PORT, 3978); needs the stack (`expertbot up`)."""
    from bot.teams.app import serve

    serve(_settings())


@teams_app.command("package")
def teams_package(
    output: Annotated[Path, typer.Option("--out", help="Where to write the zip.")] = Path("expertbot-teams.zip"),
    name: Annotated[str, typer.Option(help="The app's name in Teams (30 characters at most).")] = "Expert",
    developer: Annotated[str, typer.Option(help="Publisher name shown in Teams.")] = "expertbot",
    website: Annotated[str, typer.Option(help="https URL of the publisher (also privacy and terms).")] = (
        "https://github.com/expertbot/expertbot"
    ),
    version: Annotated[str, typer.Option(help="App version, x.y.z; raise it for each upload.")] = "1.0.0",
) -> None:
    """Build the Teams app package (manifest + icons) for EXPERTBOT_TEAMS_APP_ID and validate it."""
    from bot.teams.package import PackageError, build_package

    try:
        path = build_package(_settings(), output, name=name, developer=developer, website=website, version=version)
    except PackageError as exc:
        raise _fail(str(exc)) from None
    out.print(f"{path}: valid Teams app package; upload it in Teams > Apps > Manage your apps")


@bench_app.command("teams")
def bench_teams(
    concurrency: Annotated[int, typer.Option("--concurrency", min=1)] = 50,
    requests: Annotated[int, typer.Option("--requests", min=1)] = 2000,
    questions: Annotated[bool, typer.Option("--questions", help="Ask questions (answered in the background).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Latency of the Teams endpoint's acknowledgement (HTTP answer to the connector) on loopback."""
    from bot.bench.teams import bench_teams as run

    report = run(_settings(), concurrency=concurrency, requests=requests, questions=questions)
    _print_json(report) if as_json else out.print(report)


from bot import training_cli  # noqa: E402  (after the shared helpers it reuses)

training_cli.register(app, bench_app)


@bench_app.command("reliability")
def bench_reliability(
    quick: Annotated[bool, typer.Option("--quick", help="Shorter runs (about 3 minutes instead of 15).")] = False,
    only: Annotated[list[str] | None, typer.Option("--only", help="Run only this scenario (repeatable).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Faults survived, nothing lost, nothing leaked: each scenario on a throw-away stack, with its figures."""
    from bot.bench.reliability.registry import run_suite, scenario

    try:
        for name in only or []:
            scenario(name)
    except KeyError as exc:
        raise _fail(str(exc.args[0]), 2) from None
    rows = run_suite("quick" if quick else "full", only)
    if as_json:
        _print_json({"scenarios": rows})
    else:
        table = Table("scenario", "ok", "figures")
        for row in rows:
            ok = "skipped" if row["ok"] is None else ("yes" if row["ok"] else "[red]NO[/]")
            figures = ", ".join(f"{k} {v}" for k, v in row.items() if k not in ("name", "ok"))
            table.add_row(row["name"], ok, figures)
        out.print(table)
    if any(row["ok"] is False for row in rows):
        raise typer.Exit(1)


@bench_app.command("slack")
def bench_slack(
    concurrency: Annotated[int, typer.Option("--concurrency", min=1)] = 50,
    requests: Annotated[int, typer.Option("--requests", min=1)] = 2000,
    drain: Annotated[float, typer.Option("--drain-s", min=0, help="Wait this long for answers after the acks.")] = 120,
    as_json: JsonOpt = False,
) -> None:
    """Slack HTTP mode on loopback: acknowledgement latency (p50/p99) under load and answers per second."""
    from bot.bench.slack import bench_slack as run

    report = run(_settings(), concurrency, requests, drain)
    _print_json(report) if as_json else out.print(report)


def main() -> None:
    """The console script: known failures become one line with what to do, not a traceback."""
    import redis
    from pymilvus.exceptions import MilvusException

    from agent.knowledge.store import StoreError

    try:
        app()
    except MilvusException as exc:
        settings = get_settings()
        err.print(f"[red]error:[/] Milvus at {settings.effective_milvus_uri} did not answer ({exc.message}).")
        err.print("Start the local stack with `expertbot up --no-chat`, or point MILVUS_URI at your Milvus.")
        sys.exit(1)
    except redis.ConnectionError as exc:
        settings = get_settings()
        err.print(f"[red]error:[/] Redis at {settings.effective_redis_url} did not answer ({exc}).")
        err.print("Start the local stack with `expertbot up --no-chat`, or point REDIS_URL at your Redis.")
        sys.exit(1)
    except StoreError as exc:
        err.print(f"[red]error:[/] {exc}")
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
