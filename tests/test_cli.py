"""The `expertbot` command line end to end, on the real services: Redis, a Milvus Lite server and a Celery worker.

Each test works in its own scope, so no test sees another's documents. Commands run in-process through typer's
CliRunner; the chat console also runs as a real `python -m bot.cli chat` process reading its stdin.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from typer.testing import CliRunner, Result

from bot.cli.app import app

# `--wait` follows a job until it finishes, with no deadline of its own: a job lost on the way would hang the test.
pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[1]
WIDE = {"COLUMNS": "400"}  # rich wraps at 80 columns when not on a terminal; keep messages on one line

ZORBLAX = """\
# Zorblax Gateway Handbook

## Networking

The Zorblax gateway listens on port 7341 and only accepts connections from the Quendel subnet.

## Maintenance

Every Thursday the Zorblax gateway is restarted by the night operator, Mirela Vantongeren.
"""


def scope_name() -> str:
    return f"cli-{uuid4().hex[:8]}"


def invoke(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(app, list(args), input=input, env=WIDE, catch_exceptions=False)


def flat(text: str) -> str:
    """Whitespace collapsed, so that an assertion does not depend on where a line was wrapped."""
    return " ".join(text.split())


def json_out(result: Result) -> dict[str, Any]:
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, result.stdout  # one JSON object on stdout, nothing else
    data: dict[str, Any] = json.loads(lines[0])
    return data


def search(question: str, scope: str) -> list[dict[str, Any]]:
    hits: list[dict[str, Any]] = json_out(invoke("search", question, "--scope", scope, "--json"))["hits"]
    return hits


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def zorblax(tmp_path: Path) -> Path:
    return write(tmp_path / "zorblax.md", ZORBLAX)


def test_ingest_wait_then_search_sees_only_its_scope(worker, zorblax: Path) -> None:
    scope = scope_name()
    result = invoke("ingest", str(zorblax), "--scope", scope, "--wait")
    assert result.exit_code == 0, result.output
    assert "queued 1 document(s)" in result.stderr
    assert "zorblax.md is ready" in result.stderr

    hits = search("Which port does the Zorblax gateway listen on?", scope)
    assert hits, "the ingested document is not found"
    best = hits[0]
    assert best["doc_id"] == "zorblax.md"  # a file is known by its name, as in chat
    assert best["scope"] == scope
    assert best["title"] == "Zorblax Gateway Handbook"
    assert best["heading"] == "Networking"
    assert "port 7341" in best["text"]

    other = search("Which port does the Zorblax gateway listen on?", scope_name())
    assert all(h["doc_id"] != "zorblax.md" for h in other), other


def test_folder_with_a_broken_file_fails_but_keeps_the_good_one(worker, tmp_path: Path) -> None:
    scope = scope_name()
    folder = tmp_path / "docs"
    write(folder / "guides" / "good.md", "# Pellucid Rotation\n\nThe Pellucid key rotation happens every 43 days.\n")
    (folder / "broken.md").write_bytes(random.Random(7).randbytes(4096))

    result = invoke("ingest", str(folder), "--scope", scope, "--wait")
    assert result.exit_code != 0, result.output
    err = flat(result.stderr)
    assert "queued 2 document(s)" in err
    assert "guides/good.md is ready" in err

    hits = search("How often is the Pellucid key rotated?", scope)
    assert [h["doc_id"] for h in hits] == ["guides/good.md"]  # inside a folder: the relative path
    assert "43 days" in hits[0]["text"]

    # Each reason whole, on one line, also on an 80-column terminal (a progress bar's line is cut there).
    narrow = CliRunner().invoke(app, ["ingest", str(folder), "--scope", scope, "--wait"], env={"COLUMNS": "80"})
    assert narrow.exit_code == 1, narrow.output
    lines = narrow.stderr.splitlines()
    assert "not ingested: broken.md could not be read: broken.md looks like a binary file, not a document." in lines
    assert "1 of 2 file(s) not ingested" in lines


def test_ingest_of_a_skipped_file_exits_1_with_the_reason_whole(worker, tmp_path: Path) -> None:
    folder = tmp_path / "a-folder-with-a-rather-long-name-so-that-the-reason-passes-eighty-columns"
    write(folder / "good.md", "# Quokka Rota\n\nThe quokka rota changes every 9 days.\n")
    empty = folder / "empty.md"
    empty.write_bytes(b"")

    result = CliRunner().invoke(app, ["ingest", str(folder), "--scope", scope_name()], env={"COLUMNS": "80"})
    assert result.exit_code == 1, result.output
    lines = result.stderr.splitlines()
    assert f"skipped {empty} is empty" in lines
    assert "queued 1 document(s)" in result.stderr
    assert "1 of 2 file(s) not ingested" in lines
    assert result.stdout.strip().endswith("  good.md")  # the good one is queued all the same


def test_docs_list_and_forget(worker, zorblax: Path) -> None:
    scope = scope_name()
    assert invoke("ingest", str(zorblax), "--scope", scope, "--wait").exit_code == 0

    docs = json_out(invoke("docs", "list", "--scope", scope, "--json"))["documents"]
    mine = [d for d in docs if d["scope"] == scope]  # tenant-wide documents would be listed too
    assert len(mine) == 1, docs
    assert mine[0]["doc_id"] == "zorblax.md"
    assert mine[0]["title"] == "Zorblax Gateway Handbook"
    assert mine[0]["chunks"] >= 1

    result = invoke("docs", "forget", "zorblax.md", "--scope", scope)
    assert result.exit_code == 0, result.output
    assert f"forgot zorblax.md: {mine[0]['chunks']} chunks removed" in flat(result.stdout)
    assert search("Which port does the Zorblax gateway listen on?", scope) == []
    docs = json_out(invoke("docs", "list", "--scope", scope, "--json"))["documents"]
    assert all(d["scope"] != scope for d in docs), docs

    result = invoke("docs", "forget", "no-such-doc.md", "--scope", scope)
    assert result.exit_code != 0
    assert "no document 'no-such-doc.md' in that scope" in flat(result.stderr)


def test_status_reports_every_service(services, worker) -> None:
    report = json_out(invoke("status", "--json"))
    assert report["ok"] is True
    assert report["redis"].startswith("ok")
    assert report["milvus"].startswith("ok")
    assert len(report["workers"]) >= 1
    assert set(report["queues"]) >= {"ingest", "train"}
    assert all(isinstance(n, int) and n >= 0 for n in report["queues"].values())
    assert report["tenant"] == services.default_tenant
    assert all(isinstance(report[k], int) for k in ("documents", "passages", "passages_all_tenants"))
    assert report["passages"] <= report["passages_all_tenants"]
    assert "chunks" not in report  # one name, one audience per figure

    text = invoke("status").stdout
    assert f"documents: {report['documents']} (tenant {services.default_tenant}, every scope)" in text
    assert f"passages: {report['passages']} (tenant {services.default_tenant}, every scope)" in text
    assert "passages all tenants:" in text


def test_chat_console_answers_from_documents(worker, zorblax: Path) -> None:
    scope = scope_name()
    lines = [f"/ingest {zorblax}", "Which port does the Zorblax gateway listen on?", "/good", "/docs", "/status"]
    stdin = "\n".join([*lines, "/teach ZGW :: the Zorblax gateway", "/quit", ""])
    proc = subprocess.run(
        [sys.executable, "-m", "bot.cli", "chat", "--scope", scope],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, **WIDE},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = flat(proc.stdout)
    assert f"scope {scope}" in out
    assert "zorblax.md is ready" in out
    assert "route: from documents" in out
    assert "port 7341" in out
    assert "Sources" in out
    assert f"[1] Zorblax Gateway Handbook › Networking (zorblax.md, shared in {scope})" in out
    assert "[dim]" not in out and "[/]" not in out  # markup is rendered, not printed
    assert re.search(r"zorblax\.md: Zorblax Gateway Handbook \(\d+ passages\)", out)  # /docs
    assert "thanks, noted" in out  # /good
    assert "Documents here: 1" in out and "Domain model: none is configured" in out  # /status
    assert "Learned 'ZGW'" in out  # /teach


def test_chat_in_an_empty_scope_says_nothing_was_found(services) -> None:
    result = invoke("chat", "--scope", scope_name(), input="What is the Zorblax gateway port?\n/docs\n/quit\n")
    assert result.exit_code == 0, result.output
    out = flat(result.stdout)
    assert "route: from documents" in out
    assert "I found nothing about that in the documents shared here" in out
    assert "Share the document that has the answer with me" in out
    assert "No documents here yet" in out


def test_ingest_of_a_missing_path_fails(services, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.md"
    result = invoke("ingest", str(missing), "--scope", scope_name())
    assert result.exit_code != 0
    err = flat(result.stderr)
    assert "no such file" in err
    assert str(missing) in err
    assert "queued" not in err  # nothing was sent


def test_eval_retrieval_on_a_tiny_corpus(services, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    write(corpus / "en/zorblax.md", ZORBLAX)
    write(
        corpus / "en/pellucid.md",
        "# Pellucid Vault\n\n## Keys\n\nThe Pellucid vault rotates its master keys every 43 days.\n",
    )
    write(
        corpus / "es/quimera.md",
        "# Manual de Quimera\n\n## Copias de seguridad\n\n"
        "Las copias de seguridad de Quimera se guardan en el almacén de Tordesillas durante 19 meses.\n",
    )
    qa = tmp_path / "qa.jsonl"
    questions = [
        {
            "question": "Which port does the Zorblax gateway listen on?",
            "language": "en",
            "gold_docs": ["en/zorblax.md"],
        },
        {
            "question": "How often does the Pellucid vault rotate keys?",
            "language": "en",
            "gold_docs": ["en/pellucid.md"],
        },
        {
            "question": "¿Dónde se guardan las copias de seguridad de Quimera?",
            "language": "es",
            "gold_docs": ["es/quimera.md"],
        },
    ]
    qa.write_text("\n".join(json.dumps(q, ensure_ascii=False) for q in questions) + "\n", encoding="utf-8")

    report = json_out(invoke("eval", "retrieval", "--corpus", str(corpus), "--qa", str(qa), "--json"))
    assert {"recall_at_1", "recall_at_5", "mrr_at_10", "recall_at_5_en", "recall_at_5_other"} <= set(report)
    assert report["questions"] == 3
    assert report["recall_at_5"] == 1.0
    assert report["recall_at_5_en"] == 1.0
    assert report["recall_at_5_other"] == 1.0


def test_eval_answers_writes_each_reply_as_shown(services, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    write(corpus / "en/zorblax.md", ZORBLAX)
    qa = tmp_path / "qa.jsonl"
    question = {
        "question": "Which port does the Zorblax gateway listen on?",
        "language": "en",
        "gold_docs": ["en/zorblax.md"],
        "answer_keys": ["7341"],
    }
    qa.write_text(json.dumps(question) + "\n", encoding="utf-8")
    out = tmp_path / "answers.jsonl"

    args = ("eval", "answers", "--corpus", str(corpus), "--qa", str(qa), "--answers-out", str(out), "--json")
    report = json_out(invoke(*args))
    assert {"accepted_rate", "answer_key_rate", "gold_citation_rate", "median_chars"} <= set(report)
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 1
    assert {"question", "language", "answer_keys", "route", "text", "sources"} <= set(rows[0])
    assert "7341" in rows[0]["text"] and rows[0]["sources"] == ["en/zorblax.md"]


def test_unreachable_services_get_one_clear_line_not_a_traceback(tmp_path):
    from bot.localstack import free_port

    port = free_port()  # nothing listens behind it
    env = {**os.environ, "MILVUS_URI": f"http://127.0.0.1:{port}", "REDIS_URL": f"redis://127.0.0.1:{port}/0"}
    for args, service in ((["search", "anything"], "Milvus"), (["ingest", str(tmp_path)], "Redis")):
        if args[0] == "ingest":
            (tmp_path / "a.md").write_text("# A\n\nSome text.")
        proc = subprocess.run(
            [sys.executable, "-m", "bot.cli", *args], env=env, capture_output=True, text=True, timeout=120
        )
        said = " ".join(proc.stderr.split())  # rich wraps long lines
        assert proc.returncode == 1
        assert f"{service} at" in said and "did not answer" in said
        assert "Traceback" not in said and "expertbot up" in said


def _threads(settings: Any) -> set[str]:
    """The conversations the chat core keeps: LangGraph's checkpoints, by thread (its id: tenant, scope, thread)."""
    import sqlite3

    with sqlite3.connect(settings.data_dir / "memory.sqlite") as db:
        return {row[0].split("\x1f")[-1] for row in db.execute("SELECT DISTINCT thread_id FROM checkpoints")}


def test_ask_starts_a_conversation_per_call_unless_a_thread_is_given(services) -> None:
    scope = scope_name()
    assert invoke("ask", "What is the Zorblax gateway port?", "--scope", scope).exit_code == 0
    before = _threads(services)
    for _ in range(2):
        assert invoke("ask", "And who restarts it?", "--scope", scope).exit_code == 0
    new = _threads(services) - before
    assert len(new) == 2 and all(t.startswith("cli-") for t in new), new

    thread = f"t-{uuid4().hex[:8]}"
    for _ in range(2):
        assert invoke("ask", "What is the Zorblax gateway port?", "--thread", thread).exit_code == 0
    assert thread in _threads(services)
    assert len(_threads(services) - before - new) == 1  # both calls went to the one thread


def test_ask_json_prints_utf8_not_escapes(services) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bot.cli", "ask", "Kiek dienpinigių gaunu Vilniuje?", "--json", "--scope", scope_name()],
        capture_output=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, "LANG": "C", "LC_ALL": "C"},  # not even a UTF-8 locale makes it escape
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout.decode("utf-8")  # valid UTF-8
    assert "\\u" not in text
    reply = json.loads(text)
    assert reply["text"] in text  # the reply, in Lithuanian, as it is
    assert any(ord(c) > 127 for c in reply["text"]), reply["text"]
