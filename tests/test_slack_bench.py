"""The Slack benchmark and reliability checks run as the reliability suite and `expertbot bench slack` run
them: each starts its own services; the benchmark runs the bot as its own process (`expertbot slack`)."""

from __future__ import annotations

import time

import pytest

from bot.bench.slack import bench_slack, duplicate_deliveries, forged_requests


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


@pytest.mark.slow
def test_the_local_stack_starts_the_slack_app_only_when_tokens_are_set(services):
    import json
    import urllib.request

    from bot.bench.fakes.slack_api import signed_headers
    from bot.localstack import LocalStack, free_port

    assert not LocalStack(services, worker=False, slack=True).slack  # no tokens: no Slack app
    port = free_port()
    update = {
        "slack_bot_token": "xoxb-t",
        "slack_signing_secret": "s3cret",
        "slack_port": port,
        "slack_host": "127.0.0.1",
    }
    stack = LocalStack(services.model_copy(update=update), worker=False, slack=True)
    stack.start()
    try:
        assert [p.name for p in stack.processes] == ["slack"]
        body = json.dumps({"type": "url_verification", "challenge": "up", "token": "t"})
        headers = {**signed_headers("s3cret", body), "Content-Type": "application/json"}
        request = urllib.request.Request(f"http://127.0.0.1:{port}/slack/events", body.encode(), headers)
        with urllib.request.urlopen(request, timeout=10) as resp:
            assert json.loads(resp.read()) == {"challenge": "up"}
        slack = stack.processes[0]
    finally:
        began = time.monotonic()
        stack.stop()
    assert time.monotonic() - began < 8 and slack.popen.returncode == 0  # a clean exit on SIGTERM, not a SIGKILL
