"""`expertbot eval` (quality on an evaluation set) and `expertbot bench` (speed and reliability)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from agent.knowledge.fusion import SEARCH_MODES
from agent.types import Route
from bot.cli.common import JsonOpt, err, fail, load_settings, out, print_json

eval_app = typer.Typer(help="Measure quality on an evaluation set.", no_args_is_help=True)
bench_app = typer.Typer(help="Measure speed.", no_args_is_help=True)


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

    modes = SEARCH_MODES if all_modes else SEARCH_MODES[:1]
    report = evaluate_retrieval(load_settings(), corpus, qa, modes=modes, k=k)
    if as_json:
        print_json(report)
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
        report = routing_report(load_settings(), data, corpus)
    except ValueError as exc:
        raise fail(str(exc), 2) from None
    if as_json:
        print_json(report)
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
    answers_out: Annotated[
        Path | None,
        typer.Option("--answers-out", dir_okay=False, help="Write one JSON line per question: the reply as shown."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Answer every question through the chat core; score the replies as a person would (accepted: an answer key
    in the first 400 characters, the asker's language, at most 700 characters) and the gold documents cited."""
    from agent.evaluation import evaluate_answers

    if route not in ("auto", "docs"):
        raise fail("--route must be auto or docs", 2)
    forced: Route | None = "retrieve" if route == "docs" else None
    report = evaluate_answers(load_settings(), corpus, qa, forced=forced, answers_out=answers_out)
    if as_json:
        print_json(report)
        return
    for miss in report.pop("misses"):
        err.print(
            f"[dim]miss ({miss['route']}, key={miss['key']}, language={miss['language']}, chars={miss['chars']}, "
            f"gold={miss['gold']}): {miss['question']}[/]"
        )
    out.print(report)
    if answers_out is not None:
        out.print(f"replies written to {answers_out}")


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

    settings = load_settings()
    if processes is not None:
        settings = settings.model_copy(update={"worker_concurrency": processes})
    report = run(settings, corpus)
    print_json(report) if as_json else out.print(report)


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
        raise fail("--corpus and --qa go together (passages from one, questions from the other)", 2)
    settings = load_settings()
    text = corpus_text(settings, corpus, qa) if corpus and qa else ZIPF_TEXT
    report = run(settings, chunks, queries, text=text, upstream_baseline=baseline)
    print_json(report) if as_json else out.print(report)


@bench_app.command("teams")
def bench_teams(
    concurrency: Annotated[int, typer.Option("--concurrency", min=1)] = 50,
    requests: Annotated[int, typer.Option("--requests", min=1)] = 2000,
    questions: Annotated[bool, typer.Option("--questions", help="Ask questions (answered in the background).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Latency of the Teams endpoint's acknowledgement (HTTP answer to the connector) on loopback."""
    from bot.bench.teams import bench_teams as run

    report = run(load_settings(), concurrency=concurrency, requests=requests, questions=questions)
    print_json(report) if as_json else out.print(report)


@bench_app.command("slack")
def bench_slack(
    concurrency: Annotated[int, typer.Option("--concurrency", min=1)] = 50,
    requests: Annotated[int, typer.Option("--requests", min=1)] = 2000,
    drain: Annotated[float, typer.Option("--drain-s", min=0, help="Wait this long for answers after the acks.")] = 120,
    as_json: JsonOpt = False,
) -> None:
    """Slack HTTP mode on loopback: acknowledgement latency (p50/p99) under load and answers per second."""
    from bot.bench.slack import bench_slack as run

    report = run(load_settings(), concurrency, requests, drain)
    print_json(report) if as_json else out.print(report)


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
        raise fail(str(exc.args[0]), 2) from None
    rows = run_suite("quick" if quick else "full", only)
    if as_json:
        print_json({"scenarios": rows})
    else:
        table = Table("scenario", "ok", "figures")
        for row in rows:
            ok = "skipped" if row["ok"] is None else ("yes" if row["ok"] else "[red]NO[/]")
            figures = ", ".join(f"{k} {v}" for k, v in row.items() if k not in ("name", "ok"))
            table.add_row(row["name"], ok, figures)
        out.print(table)
    if any(row["ok"] is False for row in rows):
        raise typer.Exit(1)


@bench_app.command("train")
def bench_train(
    size: Annotated[str, typer.Option(help="mini (Phi-3-mini's shape, GPU) or tiny (the test model, CPU)")] = "tiny",
    steps: Annotated[
        int | None, typer.Option(min=1, help="Plain-loop timed steps (default 200 mini, 30 tiny).")
    ] = None,
    product_steps: Annotated[
        int | None, typer.Option(min=1, help="Product-trainer steps, the first 3 untimed (default 30 mini, 6 tiny).")
    ] = None,
    product: Annotated[bool, typer.Option(help="Also run the product trainer (trl SFTTrainer).")] = True,
    as_json: JsonOpt = False,
) -> None:
    """Training speed: the product trainer beside the plain peft loop (LoRA bf16, QLoRA NF4) on random weights.

    It runs as `python -m workers.training.bench` in a process of its own: bot/ imports no training code.
    """
    if size not in ("mini", "tiny"):
        raise fail("--size must be mini or tiny", 2)
    load_settings()  # a configuration error shows here, not in the child
    args = [sys.executable, "-m", "workers.training.bench", "--size", size]
    args += ["--steps", str(steps)] if steps else []
    args += ["--product-steps", str(product_steps)] if product_steps else []
    args += [] if product else ["--no-product"]
    proc = subprocess.run(args, stdout=subprocess.PIPE, text=True, check=False)
    if proc.returncode != 0:
        raise typer.Exit(proc.returncode)
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    if as_json:
        print_json(report)
        return
    table = Table("trainer", "method", "shape", "tokens/s", "padding eff.", f"peak GB ({report['memory']})", "MFU")
    for run in report["runs"]:
        if "error" in run:
            table.add_row(run["trainer"], "-", f"[red]failed:[/] {run['error']}", "-", "-", "-", "-")
            continue
        mfu = f"{run['mfu']:.1%}" if run.get("mfu") is not None else "-"
        tokens = f"{run['tokens_per_s']:,.0f}"
        table.add_row(run["trainer"], run["method"], run["shape"], tokens, f"{run['padding_efficiency']:.3f}",
                      f"{run['peak_mem_gb']:.2f}", mfu)  # fmt: skip
    out.print(table)
    out.print(f"{report['size']} on {report['device']}; plain loop {report['batch']} x {report['seq_len']} tokens")
    if report.get("note"):
        out.print(report["note"])


@bench_app.command("generate")
def bench_generate(
    size: Annotated[str, typer.Option(help="tiny (any device) or mini (Phi-3-mini's shape, CUDA only)")] = "tiny",
    streams: Annotated[int, typer.Option(min=1, help="Questions asked at the same moment.")] = 8,
    tokens: Annotated[int | None, typer.Option(min=1, help="New tokens per answer (tiny 64, mini 128).")] = None,
    runs: Annotated[int, typer.Option(min=1)] = 3,
    as_json: JsonOpt = False,
) -> None:
    """In-process generation: 1 question alone vs N at once through the batch scheduler (tiny: also one at a time)."""
    from agent.models.bench_generate import run_generate_bench

    if size not in ("tiny", "mini"):
        raise fail("--size must be tiny or mini", 2)
    report = run_generate_bench(
        size=size, streams=streams, tokens=tokens, runs=runs, log=(lambda _: None) if as_json else out.print
    )
    if as_json:
        print_json(report)
