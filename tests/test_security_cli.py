"""The operator's command line and the security review (issue 20): `expertbot docs forget` forgets a document
everywhere it left a trace, and a setting found wrong gives one line and exit status 2, not a traceback.

Real Redis and Milvus Lite (the session's services); the CLI runs in-process (CliRunner) or as `python -m bot.cli`.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from uuid import uuid4

from typer.testing import CliRunner

from agent.knowledge.ingest import ingest_bytes
from agent.learning import LearningStore
from agent.types import Audience
from bot.cli.app import app

ROOT = Path(__file__).resolve().parents[1]

GUIDE = """\
# Vexmoor Relay Guide

The Vexmoor relay forwards alarms to the Ostrander pager group within nine seconds.
"""


def test_docs_forget_removes_the_answers_votes_and_conversations_citing_the_document(services, knowledge) -> None:
    """Before the fix the CLI removed the passages only: answers, votes and memory kept the document's text."""
    where = Audience(services.default_tenant, f"cli-forget-{uuid4().hex[:8]}")
    result = ingest_bytes(
        knowledge.store, knowledge.embeddings, where, data=GUIDE.encode(), source="vexmoor.md", max_bytes=1 << 20
    )
    assert result.status == "ready", result
    thread = f"t-{uuid4().hex[:8]}"
    asked = CliRunner().invoke(
        app, ["ask", "Where does the Vexmoor relay forward alarms?", "--scope", where.scope, "--thread", thread]
    )
    assert asked.exit_code == 0 and "Ostrander" in asked.stdout, asked.output
    learning = LearningStore.from_url(services.effective_redis_url)
    cited = [(where.scope, "vexmoor.md")]
    answer = learning.remember_answer(where, "relay?", "Ostrander pager group", "retrieve", cited)
    assert learning.vote(answer, "U1", helpful=True) is not None
    assert _citing(services.memory_path, where) == {thread}  # the conversation is there to be forgotten

    forgot = CliRunner().invoke(app, ["docs", "forget", "vexmoor.md", "--scope", where.scope], env={"COLUMNS": "300"})
    assert forgot.exit_code == 0, forgot.output
    said = " ".join(forgot.stdout.split())
    assert "1 answers quoting it" in said and "1 conversations citing it" in said, said
    assert learning.answer(answer) is None
    assert not [v for v in learning.votes(where.tenant) if v.answer_id == answer]
    assert _citing(services.memory_path, where) == set()
    with sqlite3.connect(services.memory_path) as db:
        assert not db.execute("SELECT 1 FROM checkpoints WHERE thread_id LIKE ?", (f"%{thread}",)).fetchall()


def _citing(memory: Path, where: Audience) -> set[str]:
    """The conversations the memory knows to cite vexmoor.md in that scope (thread ids end with the thread)."""
    with sqlite3.connect(memory) as db:
        rows = db.execute(
            "SELECT thread_id FROM expertbot_citations WHERE tenant = ? AND scope = ? AND doc_id = 'vexmoor.md'",
            (where.tenant, where.scope),
        ).fetchall()
    return {str(r[0]).split("\x1f")[-1] for r in rows}


def test_a_setting_found_wrong_while_a_command_runs_gives_one_line_and_exit_2() -> None:
    """`teams serve` without authentication on 0.0.0.0 raised ConfigError through a traceback before the fix."""
    done = _cli_env({"EXPERTBOT_TEAMS_HOST": "0.0.0.0", "EXPERTBOT_TEAMS_APP_ID": "", "MICROSOFT_APP_ID": ""})
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("configuration error:") and "EXPERTBOT_TEAMS_APP_ID" in lines[0]


def test_an_invalid_setting_gives_one_line_and_exit_2() -> None:
    done = _cli_env({"EXPERTBOT_QUESTIONS_PER_MINUTE": "many"}, "status")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "EXPERTBOT_QUESTIONS_PER_MINUTE" in lines[0], done.stderr


def _cli_env(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *(args or ("teams", "serve"))],
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
