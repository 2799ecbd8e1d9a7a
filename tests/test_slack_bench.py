"""The Slack benchmark and reliability checks run as the reliability suite and `expertbot bench slack` run
them: each starts its own services; the benchmark runs the bot as its own process (`expertbot slack`)."""

from __future__ import annotations

import pytest

from bot.slack.bench import bench_slack, duplicate_deliveries, forged_requests


def test_forged_replayed_and_stale_requests_are_never_accepted():
    report = forged_requests(10)
    assert report == {
        "name": "slack_forged_requests",
        "ok": True,
        "sent": 10,
        "accepted": 0,
        "rejected_401": 10,
        "signed_control_accepted": True,
    }


@pytest.mark.slow
def test_duplicate_deliveries_to_two_bots_are_answered_once(services):
    report = duplicate_deliveries(3)
    assert report["ok"], report
    assert (report["delivered"], report["acknowledged"], report["answered"]) == (9, 9, 3)


@pytest.mark.slow
def test_the_load_benchmark_runs_the_bot_in_http_mode_as_its_own_process(services):
    report = bench_slack(services, concurrency=4, requests=12, drain_s=120)
    assert report["non_200"] == 0 and report["answered"] == report["events_sent"] == 16, report
    assert 0 < report["ack_p50_ms"] <= report["ack_p99_ms"] and report["answers_per_s"] > 0
