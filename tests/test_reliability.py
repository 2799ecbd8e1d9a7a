"""The reliability suite's short versions, on a throw-away stack of their own (its Redis and Milvus are killed
and restarted, so it cannot share the session's): one child process runs them all, each test reads its row."""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

from bot.bench.reliability.registry import SCENARIOS, run_suite
from bot.bench.reliability.tail import AnswerTiming, GcPauses, QueueTimedExecutor, tail_report
from bot.cli.app import app

BUILT_IN = [s.name for s in SCENARIOS if not s.hook]
HOOKS = [s.name for s in SCENARIOS if s.hook]


QUICK_HOOKS = [n for n in HOOKS if n != "slack duplicate deliveries"]
"""The chat-surface scenarios that take a second; Slack's duplicate deliveries is checked in test_slack_bench.py."""


@pytest.fixture(scope="module")
def rows() -> dict[str, dict[str, Any]]:
    return {row["name"]: row for row in run_suite("test", BUILT_IN + QUICK_HOOKS, timeout_s=600)}


def test_worker_killed_mid_job_loses_nothing_and_duplicates_nothing(rows):
    row = rows["worker kill -9"]
    assert row["ok"], json.dumps(row)
    assert row["kills"] == row["kills_planned"] == 1 and row["jobs_interrupted"] >= 1
    assert row["lost_jobs"] == 0 and row["wrong_documents"] == 0
    assert row["chunks_found"] == row["chunks_expected"] > 0


def test_redis_killed_with_jobs_queued_loses_no_job(rows):
    row = rows["redis restart"]
    assert row["ok"], json.dumps(row)
    assert row["queued_at_kill"] > 0 and row["lost_jobs"] == 0 and row["worker_survived"]
    assert row["chunks_found"] == row["chunks_expected"]


def test_jobs_finish_after_milvus_returns(rows):
    row = rows["milvus restart"]
    assert row["ok"], json.dumps(row)
    assert row["done_before_stop"] < row["documents"] and row["retries"] > 0
    assert row["lost_jobs"] == 0 and row["chunks_found"] == row["chunks_expected"]


def test_hostile_files_get_clear_replies_and_memory_stays_bounded(rows):
    row = rows["hostile files"]
    assert row["ok"], json.dumps(row)
    assert row["files"] == 7 and row["unclear_replies"] == 0 and row["worker_restarts"] == 0
    assert row["peak_growth_mb"] <= row["bound_mb"]


def test_a_poison_document_is_refused_or_dead_lettered_and_the_user_told(rows):
    row = rows["poison document"]
    assert row["ok"], json.dumps(row)
    assert row["peak_growth_mb"] <= row["bound_mb"] and "MB of text," in row["refusal"]
    assert row["kills"] == row["max_deliveries"] and row["dead_lettered"] and not row["blob_left"]


def test_a_forgotten_document_leaves_nothing_behind(rows):
    row = rows["forget leaves nothing"]
    assert row["ok"], json.dumps(row)
    assert row["answers_quoting_it"] > 0, "nothing to forget proves nothing"
    assert row["redis_keys_with_text"] == row["memory_files_with_text"] == row["milvus_passages_left"] == 0


def test_no_citation_or_training_item_crosses_an_audience(rows):
    row = rows["audience isolation"]
    assert row["ok"], json.dumps(row)
    assert row["cross_scope_citations"] == 0 and row["chat_cross_scope_citations"] == 0
    assert row["searches"] == 12 * 20 and row["training_leaks"] == 0
    found, total = map(int, row["own_document_first"].split("/"))
    assert found == total > 0, "isolation proves nothing if the right document is not found either"


def test_simulated_users_see_no_errors(rows):
    row = rows["simulated users"]
    assert row["ok"], json.dumps(row)
    assert row["errors"] == 0 and row["answers"] > 0 and 0 < row["p50_ms"] <= row["p99_ms"]
    tail = row["tail"]  # the slowest answers taken apart: core stages, outside the core, GC, thread waits
    assert tail["slowest"] >= 1 and tail["latency_ms"] >= row["p99_ms"] - 0.1
    assert "total" in tail["core_ms"] and tail["thread_wait_ms"]["p50"] <= tail["thread_wait_ms"]["max"]


def test_the_tail_keeps_the_slowest_answer_when_its_latency_rounds_up():
    """p99 is reported rounded to 0.1 ms: 3441.46 ms reads 3441.5, and the cutoff must not drop the answer."""
    start = 100.0
    answers = [AnswerTiming(start, start + ms / 1000, "retrieve", {"total": ms - 1}) for ms in (12.0, 20.0, 3441.46)]
    tail = tail_report(answers, GcPauses(), QueueTimedExecutor())
    assert tail["slowest"] == 1 and tail["routes"] == {"retrieve": 1}
    assert tail["latency_ms"] == 3441.5 and tail["core_ms"]["total"] == 3440.5


@pytest.mark.parametrize("name", QUICK_HOOKS)
def test_chat_surface_scenarios_run_through_the_suite(rows, name):
    row = rows[name]
    assert row["ok"], json.dumps(row)
    assert row.get("accepted", 0) == 0 and row.get("answered", 1) == 1


def test_cli_rejects_unknown_scenario_names():
    bad = CliRunner().invoke(app, ["bench", "reliability", "--only", "no such scenario"])
    assert bad.exit_code == 2
