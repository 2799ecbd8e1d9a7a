"""Issue 20, findings 6, 7, 10 and 11: escaped Slack text, failure kinds instead of messages, redacted logs in
answer processes, and `teams serve` without a stack. Real local Slack API server, Redis and processes."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from pathlib import Path
from uuid import uuid4

from agent.types import Audience
from bot.assistant import Assistant
from bot.bench.fakes.slack_api import LocalSlack
from bot.conversation import Conversation

ROOT = Path(__file__).resolve().parent.parent
SECRET = "xoxb-1234567890-abcdefghijklmnopqrstuvwx"


def test_every_slack_text_field_is_escaped():
    """A file named `<!channel> x.png` (in a refusal, a progress line, a fallback) must not ping the channel."""
    from bot.slack.app import make_client

    async def scenario() -> list[str]:
        slack = LocalSlack()
        await slack.start()
        try:
            client = make_client(slack.token, slack.base_url)
            await client.chat_postMessage(channel="C1", text="<!channel> x.png is over the 25 MB limit.")
            await client.chat_update(channel="C1", ts="1.000001", text="Reading <@U999> & <https://evil|ok>.md")
            await client.chat_postEphemeral(channel="C1", user="U1", text="<!here>")
            return [c.args.get("text", "") for c in slack.calls if c.method.startswith("chat.")]
        finally:
            await slack.stop()

    texts = asyncio.run(scenario())
    assert texts == [
        "&lt;!channel&gt; x.png is over the 25 MB limit.",
        "Reading &lt;@U999&gt; &amp; &lt;https://evil|ok&gt;.md",
        "&lt;!here&gt;",
    ]


def test_a_failed_job_shows_the_kind_of_failure_and_logs_the_details(services, monkeypatch, caplog):
    """Fault injection at the job status: the worker's exception carries a host and a path."""
    import workers.client
    from workers.client import JobStatus

    detail = "OperationalError: could not reach db-7.corp.internal:5432 from /srv/expertbot/secret-dir"
    monkeypatch.setattr(workers.client, "job_status", lambda job: JobStatus(job, "error", error=detail))
    assistant = Assistant(services)
    conv = Conversation("slack", Audience(f"kind-{uuid4().hex[:6]}", "C1"), "t", "U1", private=False)

    async def scenario() -> str:
        last = ""
        async for step in assistant.share(conv, b"# Notes\n\nSome text.", "notes.md"):
            last = step.text
        return last

    with caplog.at_level(logging.ERROR):
        said = asyncio.run(scenario())
    assert said.startswith("notes.md could not be read: an internal error")
    assert "db-7" not in said and "/srv" not in said and "OperationalError" not in said
    assert any("db-7.corp.internal" in r.getMessage() for r in caplog.records)


def _log_a_secret() -> bool:
    logging.getLogger("expertbot.child").warning("calling Slack with %s", SECRET)
    for handler in logging.getLogger().handlers:
        handler.flush()
    return True


def test_answer_processes_log_through_the_redacting_handler(services, capfd):
    from bot.answer_pool import answer_pool

    pool = answer_pool(services.model_copy(update={"slack_bot_token": SECRET}), 1)
    try:
        assert pool.submit(_log_a_secret).result(timeout=120)
    finally:
        pool.shutdown()
    err = capfd.readouterr().err
    assert "calling Slack with" in err, err[-2000:]
    assert SECRET not in err


def test_teams_serve_without_a_stack_says_what_is_missing(services):
    from bot.localstack import free_port

    env = {
        **os.environ,
        "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "MILVUS_URI": f"http://127.0.0.1:{free_port()}",
        "EXPERTBOT_TEAMS_PORT": str(free_port()),
        "EXPERTBOT_ANSWER_PROCESSES": "1",
        "PYTHONPATH": str(ROOT),
    }
    code = "import sys; from bot.cli.app import main; sys.argv = ['expertbot', 'teams', 'serve']; main()"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=240, cwd=ROOT)
    out = done.stdout + done.stderr
    assert done.returncode != 0
    assert "BrokenProcessPool" not in out and "Traceback" not in out, out[-3000:]
    assert "Redis" in out and "expertbot up" in out


def test_slack_connect_conversations_see_only_their_own_documents(knowledge):
    from agent.knowledge.ingest import ingest_bytes
    from agent.types import TENANT_WIDE
    from bot.slack.audience import scope_for

    team = f"T{uuid4().hex[:8].upper()}"
    handbook = b"# Handbook\n\n## Salaries\n\nThe salary bands of Glimmerfax staff are reviewed every April.\n"
    result = ingest_bytes(
        knowledge.store, knowledge.embeddings, Audience(team, TENANT_WIDE), data=handbook, source="handbook.md",
        max_bytes=10**6, chunk_chars=400,
    )  # fmt: skip
    assert result.status == "ready"
    question = "When are the Glimmerfax salary bands reviewed?"
    internal = Audience(team, scope_for(team, "C0SHARED", {"user_team": team}))
    outsider = Audience(team, scope_for(team, "C0SHARED", {"user_team": "T0OTHERORG"}))
    shared_channel = Audience(team, scope_for(team, "C0SHARED", {"user_team": team}, channel_shared=True))
    assert knowledge.search(internal, question, k=3), "the tenant-wide handbook is visible inside the workspace"
    assert knowledge.search(outsider, question, k=3) == []
    assert knowledge.search(shared_channel, question, k=3) == []
    assert Audience(team, "ext:C0SHARED").visible_scopes == ["ext:C0SHARED"]


def test_teams_private_and_shared_channels_are_private_scopes():
    import copy
    import json

    from botbuilder.schema import Activity

    from bot.teams.handler import conversation_of

    raw = json.loads((ROOT / "tests" / "fixtures" / "teams" / "message_channel_mention.json").read_text())
    kinds = {}
    for membership in ("standard", "private", "shared"):
        act = copy.deepcopy(raw)
        act["channelData"].setdefault("channel", {})["membershipType"] = membership
        kinds[membership] = conversation_of(Activity().deserialize(act), "local").private
    assert kinds == {"standard": False, "private": True, "shared": True}


def test_healthz_details_only_for_local_callers_or_the_token(services, worker):
    import aiohttp
    from aiohttp import web

    from bot.health import add_health_routes
    from bot.localstack import free_port

    settings = services.model_copy(update={"health_token": "health-" + uuid4().hex})

    async def get(headers: dict[str, str]) -> dict[str, object]:
        app = web.Application()
        add_health_routes(app, settings)
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            url = f"http://127.0.0.1:{port}/healthz"
            async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as r:
                body: dict[str, object] = await r.json()
                return body
        finally:
            await runner.cleanup()

    relayed = {"X-Forwarded-For": "198.51.100.4"}  # through a reverse proxy: someone on the internet
    assert asyncio.run(get(relayed)) == {"ok": True}
    assert "workers" in asyncio.run(get({**relayed, "Authorization": f"Bearer {settings.health_token}"}))
    assert asyncio.run(get({**relayed, "Authorization": "Bearer wrong"})) == {"ok": True}
    assert "workers" in asyncio.run(get({}))  # on this machine: the operator
