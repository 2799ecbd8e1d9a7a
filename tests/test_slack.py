"""The Slack app over real HTTP: signed requests (payload shapes copied from Slack's into tests/fixtures/slack)
go to the bot's aiohttp endpoint; the bot talks to a local server speaking the Slack Web API; answers come
from the real chat core on Redis, Milvus Lite and a Celery worker."""

from __future__ import annotations

import asyncio
import copy
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
import yaml
from fpdf import FPDF

from agent.chat import ChatCore, make_chat_core
from bot.assistant import Assistant
from bot.bench.fakes.slack_api import LocalSlack
from bot.bench.fakes.slack_loopback import Loopback, loopback
from bot.slack.blocks import FEEDBACK

FIXTURES = Path(__file__).parent / "fixtures" / "slack"
FACT = "The Quaxley turbine must be serviced every 417 operating hours by a certified engineer."
QUESTION = "How often must the Quaxley turbine be serviced?"


def _fixture(name: str) -> dict[str, Any]:
    return copy.deepcopy(json.loads((FIXTURES / name).read_text()))


def _pdf(text: str) -> bytes:
    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("Helvetica", size=12)
    pdf.multi_cell(0, 8, "Turbine Maintenance Handbook\n\n" + text)
    return bytes(pdf.output())


def _ts() -> str:
    return f"{time.time():.6f}"


def _event(name: str, team: str, **fields: Any) -> dict[str, Any]:
    body = _fixture(name)
    body.update(team_id=team, event_id=f"Ev{uuid4().hex[:10].upper()}")
    body["event"].update(fields)
    return body


def _mention(team: str, channel: str, text: str, ts: str | None = None, **fields: Any) -> dict[str, Any]:
    return _event("app_mention.json", team, channel=channel, text=f"<@U0BOT> {text}", ts=ts or _ts(), **fields)


def _answers(slack: LocalSlack, thread: str) -> list[dict[str, Any]]:
    """Finished answers in a thread, as a person sees them (streamed text + final blocks, or a posted message)."""
    return slack.answers(thread)


def _blocks_text(message: dict[str, Any]) -> str:
    return str(message.get("text") or "") + json.dumps(message["blocks"], ensure_ascii=False)


def _feedback(message: dict[str, Any]) -> dict[str, Any]:
    (block,) = [b for b in message["blocks"] if b["type"] == "context_actions"]
    (element,) = block["elements"]
    assert element["type"] == "feedback_buttons" and element["action_id"] == FEEDBACK
    return dict(element)


def _click(team: str, channel: str, thread: str, value: str, user: str = "U0VOTER") -> dict[str, Any]:
    """A click on a feedback button, shaped as Slack sends a block action (form-encoded `payload`)."""
    click = _fixture("block_actions.json")
    click.update(team={"id": team, "domain": "local"}, user={"id": user, "team_id": team})
    click["channel"] = {"id": channel, "name": "chat"}
    click["container"] = {"type": "message", "message_ts": "1.2", "channel_id": channel, "thread_ts": thread}
    click["actions"] = [{"type": "feedback_buttons", "action_id": FEEDBACK, "block_id": "expertbot_feedback_x",
                         "value": value, "action_ts": _ts()}]  # fmt: skip
    return {"payload": json.dumps(click)}


@pytest.fixture(scope="module")
def core(services) -> ChatCore:
    return make_chat_core(services)


@pytest.fixture()
def assistant(services, worker, core) -> Assistant:
    return Assistant(services.model_copy(update={"admins": "U0ADMIN"}), core=core)


def _run(assistant: Assistant, scenario: Callable[[Loopback], Awaitable[None]]) -> None:
    async def main() -> None:
        async with loopback(assistant.settings, assistant) as lb:
            await scenario(lb)

    asyncio.run(main())


def test_a_pdf_shared_in_a_private_channel_is_cited_there_only_and_votes_are_stored(assistant):
    team = f"T{uuid4().hex[:8].upper()}"

    async def scenario(lb: Loopback) -> None:
        slack = lb.slack
        slack.add_channel("C0PRIV", private=True)
        slack.add_channel("C0PUB")
        shared_ts = _ts()
        slack.add_file("F0HAND", "handbook.pdf", _pdf(FACT), channel="C0PRIV", message_ts=shared_ts)
        share = _event("message_file_share.json", team, channel="C0PRIV", channel_type="group", ts=shared_ts,
                       event_ts=shared_ts, files=[{"id": "F0HAND", "file_access": "check_file_info"}])  # fmt: skip
        assert (await lb.post(share))[0] == 200

        def ready() -> bool:
            return any("handbook.pdf is ready" in str(u.get("text")) for u in slack.said("chat.update"))

        await slack.wait_for(ready, timeout=90)
        (status,) = [m for m in slack.said("chat.postMessage") if str(m.get("text")).startswith("Reading")]
        assert status["thread_ts"] == shared_ts and status["channel"] == "C0PRIV"
        assert slack.said("download") == [{"file": "F0HAND", "authorised": True}]
        # The same file announced again (file_shared) is not ingested twice.
        again = _event("file_shared.json", team, channel_id="C0PRIV", file_id="F0HAND", file={"id": "F0HAND"})
        assert (await lb.post(again))[0] == 200

        ask_ts = _ts()
        await lb.post(_mention(team, "C0PRIV", QUESTION, ask_ts))
        await slack.wait_for(lambda: bool(_answers(slack, ask_ts)))
        (answer,) = _answers(slack, ask_ts)
        text = _blocks_text(answer)
        assert "417" in text and "from documents" in text and "handbook.pdf" in text
        assert f"https://local.slack.test/archives/C0PRIV/p{shared_ts.replace('.', '')}" in text
        # Streamed into the thread (a channel: addressed to the asker), with the status shown while working.
        (start,) = slack.said("chat.startStream")
        assert start["thread_ts"] == ask_ts and start["recipient_user_id"] == "W222"
        assert start["recipient_team_id"] and slack.said("chat.stopStream")
        statuses = [s["status"] for s in slack.said("assistant.threads.setStatus") if s["thread_ts"] == ask_ts]
        assert statuses == ["is searching the documents…", "is writing…"]
        assert not slack.said("reactions.add")

        elsewhere_ts = _ts()
        await lb.post(_mention(team, "C0PUB", "docs: " + QUESTION, elsewhere_ts))
        await slack.wait_for(lambda: bool(_answers(slack, elsewhere_ts)))
        assert "handbook.pdf" not in _blocks_text(_answers(slack, elsewhere_ts)[0])
        assert len([m for m in slack.said("chat.postMessage") if str(m.get("text")).startswith("Reading")]) == 1

        positive = _feedback(answer)["positive_button"]["value"]
        status_code, _ = await lb.post(_click(team, "C0PRIV", ask_ts, positive), form=True)
        assert status_code == 200
        await slack.wait_for(lambda: bool(slack.said("chat.postEphemeral")))
        assert "Thanks" in slack.said("chat.postEphemeral")[0]["text"]

    _run(assistant, scenario)
    assert [r.answer_id for r in assistant.learning.helpful_answers(team)] != []


def test_the_same_event_delivered_three_times_is_answered_once_across_two_bot_processes(assistant, services):
    team = f"T{uuid4().hex[:8].upper()}"
    ts = _ts()
    event = _mention(team, "C0DUP", "Hello, what can you do?", ts)

    async def main() -> None:
        second = Assistant(assistant.settings, core=assistant.core)  # another process: only Redis is shared
        async with loopback(assistant.settings, assistant) as one, loopback(second.settings, second) as two:
            codes = await asyncio.gather(one.post(event), one.post(event, retry=1), two.post(event, retry=2))
            assert [c for c, _ in codes] == [200, 200, 200]
            await asyncio.sleep(0.1)
            both = [*one.slack.said("chat.postMessage"), *two.slack.said("chat.postMessage")]
            await asyncio.wait_for(_until(lambda: bool(_answers(one.slack, ts) or _answers(two.slack, ts))), 60)
            await asyncio.sleep(1.0)  # time for a wrong second answer to show up
            both = _answers(one.slack, ts) + _answers(two.slack, ts)
            assert len(both) == 1

    asyncio.run(main())


async def _until(predicate: Callable[[], bool]) -> None:
    while not predicate():
        await asyncio.sleep(0.05)


def test_forged_tampered_and_stale_requests_get_401_and_a_signed_one_gets_through(assistant):
    async def scenario(lb: Loopback) -> None:
        challenge = {"token": "t", "challenge": "c-123", "type": "url_verification"}
        assert await lb.post(challenge) == (200, json.dumps({"challenge": "c-123"}))
        assert (await lb.post(challenge, secret="not-the-secret"))[0] == 401
        assert (await lb.post(challenge, tamper=True))[0] == 401
        assert (await lb.post(challenge, timestamp=int(time.time()) - 6 * 60))[0] == 401
        assert (await lb.post(challenge, timestamp=int(time.time()) + 6 * 60))[0] == 401
        async with lb.session.post(lb.url, data=json.dumps(challenge)) as unsigned:
            assert unsigned.status == 401

    _run(assistant, scenario)


def test_slash_commands_are_acknowledged_at_once_and_answered_later(assistant):
    team = f"T{uuid4().hex[:8].upper()}"

    def command(slack: LocalSlack, name: str, text: str, user: str = "U0ASKER") -> dict[str, Any]:
        body = _fixture("slash_command.json")
        body.update(team_id=team, channel_id="C0CMD", channel_name="general", user_id=user, command=name, text=text,
                    response_url=slack.response_url(uuid4().hex), trigger_id=uuid4().hex)  # fmt: skip
        return body

    async def scenario(lb: Loopback) -> None:
        slack = lb.slack
        slack.add_channel("C0CMD")
        began = time.monotonic()
        assert await lb.post(command(slack, "/ask", "Hello there, who are you?"), form=True) == (200, "")
        assert time.monotonic() - began < 1.0
        assert slack.said("response_url") == []  # acknowledged before the answer exists
        await slack.wait_for(lambda: bool(slack.said("response_url")))
        (reply,) = slack.said("response_url")
        assert reply["response_type"] == "in_channel" and "Hello there" in json.dumps(reply["blocks"])

        status, text = await lb.post(command(slack, "/ask", "  "), form=True)
        assert status == 200 and "Ask a question" in text

        for text, expected in [("status", "Documents here: 0"), ("retrain", "Only admins can retrain"),
                               ("forget handbook.pdf", "Only admins can forget"), ("dance", "don't know")]:  # fmt: skip
            slack.calls.clear()
            assert (await lb.post(command(slack, "/expert", text), form=True))[0] == 200
            await slack.wait_for(lambda: bool(slack.said("response_url")))
            reply = slack.said("response_url")[0]
            assert expected in reply["text"] and reply["response_type"] == "ephemeral", (text, reply)
        slack.calls.clear()
        await lb.post(command(slack, "/expert", "forget nothing.pdf", user="U0ADMIN"), form=True)
        await slack.wait_for(lambda: bool(slack.said("response_url")))
        assert "no document 'nothing.pdf'" in slack.said("response_url")[0]["text"]

    _run(assistant, scenario)


def test_a_login_page_instead_of_the_file_and_an_image_end_with_a_clear_message(assistant):
    team = f"T{uuid4().hex[:8].upper()}"

    async def scenario(lb: Loopback) -> None:
        slack = lb.slack
        ts = _ts()
        slack.add_file("F0LOGIN", "policy.pdf", _pdf(FACT), serve="login")
        slack.add_file("F0PIC", "photo.png", b"\x89PNG....", mimetype="image/png")
        files = [{"id": "F0LOGIN"}, {"id": "F0PIC"}]
        share = _event("message_file_share.json", team, channel="D0DM", channel_type="im", ts=ts, files=files)
        await lb.post(share)
        await slack.wait_for(lambda: len(slack.said("chat.postMessage")) >= 2)
        texts = [m["text"] for m in slack.said("chat.postMessage")]
        assert "web page instead of policy.pdf" in texts[0]
        assert "photo.png is not a document" in texts[1]
        assert all(m["thread_ts"] == ts for m in slack.said("chat.postMessage"))
        assert [d["file"] for d in slack.said("download")] == ["F0LOGIN"]  # the image was never downloaded

    _run(assistant, scenario)


def test_thread_follow_ups_need_no_mention_and_bots_edits_and_strangers_are_ignored(assistant):
    team = f"T{uuid4().hex[:8].upper()}"

    async def scenario(lb: Loopback) -> None:
        slack = lb.slack
        slack.add_channel("C0THR")
        slack.throttle["chat.startStream"] = 1  # the first answer meets HTTP 429 and is sent after Retry-After
        root = _ts()
        await lb.post(_mention(team, "C0THR", "Hi! What do you do?", root))
        await slack.wait_for(lambda: bool(_answers(slack, root)))
        assert slack.said("429:chat.startStream")

        def message(text: str, thread: str | None, **extra: Any) -> dict[str, Any]:
            fields = {"text": text, "channel": "C0THR", "channel_type": "channel", "ts": _ts(), **extra}
            body = _event("message_in_thread.json", team, **fields)
            if thread is None:
                body["event"].pop("thread_ts")
            else:
                body["event"]["thread_ts"] = thread
            return body

        ignored = [
            message("and what else?", root, bot_id="B0OTHER", subtype="bot_message"),  # another bot
            message("edited", root, subtype="message_changed"),  # an edit
            message("I am the bot", root, user="U0BOT"),  # ourselves (bolt drops it)
            message("chatter between people", None),  # not in a bot thread, no mention
            message("chatter in another thread", "1.000001"),
        ]
        for body in ignored:
            assert (await lb.post(body))[0] == 200
        await lb.post(message("Thanks! And who made you?", root))
        await slack.wait_for(lambda: len(_answers(slack, root)) == 2)
        await asyncio.sleep(1.0)
        assert len(slack.answers()) == 2

    _run(assistant, scenario)


def test_the_manifest_asks_for_what_the_app_listens_to():
    manifest = yaml.safe_load((Path(__file__).parents[1] / "bot" / "slack" / "manifest.yaml").read_text())
    assert {c["command"] for c in manifest["features"]["slash_commands"]} == {"/ask", "/expert"}
    events = set(manifest["settings"]["event_subscriptions"]["bot_events"])
    assert events == {"app_mention", "file_shared", "message.channels", "message.groups", "message.im", "message.mpim",
                      "assistant_thread_started", "assistant_thread_context_changed"}  # fmt: skip
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    assert {"chat:write", "files:read", "commands", "channels:read", "groups:read", "assistant:write"} <= scopes
    assert {"users:read"} <= scopes  # the asker's language (users.info with include_locale)
    agent = manifest["features"]["assistant_view"]
    assert agent["assistant_description"] and manifest["features"]["app_home"]["messages_tab_enabled"]
    assert manifest["settings"]["socket_mode_enabled"] and manifest["settings"]["interactivity"]["is_enabled"]


def test_socket_mode_receives_envelopes_acks_them_and_answers(assistant):
    from bot.slack.app import SlackBot
    from bot.slack.serve import connect_socket_mode

    team = f"T{uuid4().hex[:8].upper()}"

    async def main() -> None:
        slack = LocalSlack()
        await slack.start()
        update = {"slack_bot_token": slack.token, "slack_app_token": slack.app_token, "slack_api_url": slack.base_url}
        bot = SlackBot(assistant.settings.model_copy(update=update), assistant)
        handler = await connect_socket_mode(bot, slack.app_token)
        try:
            await slack.wait_for(lambda: bool(slack.said("socket_connected")))
            ts = _ts()
            envelope = await slack.send_envelope(_mention(team, "D0SOCK", "Hello! Who are you?", ts))
            await slack.wait_for(lambda: any(a.get("envelope_id") == envelope for a in slack.said("socket_ack")))
            await slack.wait_for(lambda: bool(_answers(slack, ts)))
            command = _fixture("slash_command.json")
            command.update(team_id=team, channel_id="D0SOCK", command="/expert", text="help",
                           response_url=slack.response_url("sock"))  # fmt: skip
            envelope = await slack.send_envelope(command, "slash_commands")
            await slack.wait_for(lambda: any(a.get("envelope_id") == envelope for a in slack.said("socket_ack")))
            await slack.wait_for(lambda: bool(slack.said("response_url")))
            # escaped as Slack wants it (issue 20): shown to the user as "teach <term> :: <definition>"
            assert "teach &lt;term&gt; :: &lt;definition&gt;" in slack.said("response_url")[0]["text"]
        finally:
            await handler.close_async()  # type: ignore[no-untyped-call]
            await bot.close()
            await slack.stop()

    asyncio.run(main())


# --- the agent view, streaming and its fallbacks ----------------------------------------------------------------


def _thread_started(team: str, dm: str, thread: str, user: str, viewing: str | None) -> dict[str, Any]:
    body = _fixture("assistant_thread_started.json")
    body.update(team_id=team, event_id=f"Ev{uuid4().hex[:10].upper()}")
    body["event"]["assistant_thread"].update(channel_id=dm, thread_ts=thread, user_id=user)
    body["event"]["assistant_thread"]["context"] = {"channel_id": viewing, "team_id": team} if viewing else {}
    return body


def _dm(team: str, dm: str, thread: str, user: str, text: str) -> dict[str, Any]:
    body = _event("message_im_assistant_thread.json", team, channel=dm, thread_ts=thread, user=user, text=text)
    body["event"].update(ts=_ts(), team=team, user_team=team)
    return body


def test_the_agent_view_suggests_streams_with_status_and_stores_feedback_and_channel_documents_need_membership(
    assistant,
):
    from agent.knowledge.ingest import ingest_bytes
    from agent.learning import CuratedItem
    from agent.types import Audience

    team = f"T{uuid4().hex[:8].upper()}"
    knowledge = assistant.core.knowledge
    handbook = f"# Turbine Maintenance Handbook\n\n## Service\n\n{FACT}\n".encode()
    audience = Audience(team, "C0VIEW")
    ingest_bytes(knowledge.store, knowledge.embeddings, audience, data=handbook, source="handbook.md", max_bytes=10**7)
    assistant.learning.add_curated(CuratedItem("term", "Quaxley", "A turbine.", team, "*", "test"))

    async def scenario(lb: Loopback) -> None:
        slack = lb.slack
        slack.members["C0VIEW"] = ["U0MEMBER", "U0BOT"]
        slack.locales["U0MEMBER"] = "de-DE"
        thread = _ts()
        assert (await lb.post(_thread_started(team, "D0MEMBER", thread, "U0MEMBER", "C0VIEW")))[0] == 200
        await slack.wait_for(lambda: bool(slack.said("assistant.threads.setSuggestedPrompts")))
        (offer,) = slack.said("assistant.threads.setSuggestedPrompts")
        assert offer["channel_id"] == "D0MEMBER" and offer["thread_ts"] == thread
        messages = [p["message"] for p in offer["prompts"]]
        assert messages[0] == "Was bedeutet Quaxley?"  # a term taught here, in the asker's language
        assert "Was sind die wichtigsten Punkte in Turbine Maintenance Handbook?" in messages  # the viewed channel's
        assert len(messages) <= 4 and all(p["title"] for p in offer["prompts"])

        await lb.post(_dm(team, "D0MEMBER", thread, "U0MEMBER", QUESTION))
        await slack.wait_for(lambda: bool(_answers(slack, thread)))
        (answer,) = _answers(slack, thread)
        assert "417" in answer["text"] and "handbook.md" in _blocks_text(answer)  # streamed, then sources
        assert [c.method for c in slack.calls if c.method.endswith("Stream")][:1] == ["chat.startStream"]
        assert slack.said("chat.stopStream")[-1]["blocks"] == answer["blocks"]
        (title,) = slack.said("assistant.threads.setTitle")
        assert title["title"] == QUESTION and title["thread_ts"] == thread
        statuses = [s["status"] for s in slack.said("assistant.threads.setStatus")]
        assert statuses == ["is searching the documents…", "is writing…"]
        negative = _feedback(answer)["negative_button"]["value"]
        assert (await lb.post(_click(team, "D0MEMBER", thread, negative, user="U0MEMBER"), form=True))[0] == 200
        await slack.wait_for(lambda: bool(slack.said("chat.postEphemeral")))

        # Someone who is not in the channel asks the same while viewing it: its documents stay out.
        other = _ts()
        await lb.post(_thread_started(team, "D0STRANGER", other, "U0STRANGER", "C0VIEW"))
        await lb.post(_dm(team, "D0STRANGER", other, "U0STRANGER", "docs: " + QUESTION))
        await slack.wait_for(lambda: bool(_answers(slack, other)))
        assert "417" not in _answers(slack, other)[0]["text"]
        strangers = [o for o in slack.said("assistant.threads.setSuggestedPrompts") if o["channel_id"] == "D0STRANGER"]
        assert strangers and "Turbine" not in json.dumps(strangers[0]["prompts"])

    _run(assistant, scenario)
    (vote,) = assistant.learning.votes(team)
    assert vote.user == "U0MEMBER" and vote.helpful is False


def test_a_refused_or_expired_stream_and_a_workflow_message_still_get_the_whole_answer(assistant):
    team = f"T{uuid4().hex[:8].upper()}"

    async def scenario(lb: Loopback) -> None:
        slack = lb.slack
        slack.add_channel("C0FALL")
        ask = "Hello! Who are you and what can you do for me in this workspace?"

        slack.refuse_streams = "feature_not_enabled"  # streaming refused at the start: posted, then updated
        refused = _ts()
        await lb.post(_mention(team, "C0FALL", ask, refused))
        await slack.wait_for(lambda: bool(_answers(slack, refused)))
        (final,) = _answers(slack, refused)
        assert final["state"] == "posted" and _feedback(final)
        assert not [m for m in slack.messages.values() if m["state"] == "streaming"]

        slack.refuse_streams, slack.stream_limit_s = None, 0.0  # the stream ends before it is stopped
        expired = _ts()
        await lb.post(_mention(team, "C0FALL", ask, expired))
        await slack.wait_for(lambda: bool(_answers(slack, expired)))
        (final,) = _answers(slack, expired)
        assert final["state"] == "posted" and _feedback(final)  # chat.update on the stream's own message
        started = [m for m in slack.said("chat.startStream") if m["thread_ts"] == expired]
        assert len(started) == 1 and not [m for m in slack.said("chat.postMessage") if m.get("thread_ts") == expired]

        slack.stream_limit_s = 300.0
        calls = len(slack.said("chat.startStream"))
        workflow = _ts()
        await lb.post(_mention(team, "C0FALL", ask, workflow, bot_id="B0WORKFLOW"))  # Slack streams to people only
        await slack.wait_for(lambda: bool(_answers(slack, workflow)))
        assert len(slack.said("chat.startStream")) == calls and _feedback(_answers(slack, workflow)[0])
        first = next(m for m in slack.said("chat.postMessage") if m.get("thread_ts") == workflow)
        assert first["text"] and not first.get("blocks")  # the text first, then the update with the blocks

    _run(assistant, scenario)


class _FailingMidAnswer(Assistant):
    """Fault injection: the answer fails after part of it was streamed."""

    async def stream(self, *args: Any, **kwargs: Any) -> Any:
        from bot.conversation import AnswerEvent

        yield AnswerEvent("route", route="retrieve")
        yield AnswerEvent("text", text="The Quaxley turbine must be serviced every " * 8)
        raise RuntimeError("the generator fell over")


def test_an_answer_failing_mid_stream_ends_its_own_message_with_the_apology(services):
    broken = _FailingMidAnswer(services)
    team = f"T{uuid4().hex[:8].upper()}"

    async def scenario(lb: Loopback) -> None:
        slack = lb.slack
        slack.add_channel("C0FAIL")
        ts = _ts()
        await lb.post(_mention(team, "C0FAIL", QUESTION, ts))
        await slack.wait_for(lambda: any(m.get("state") == "stopped" for m in slack.messages.values()))
        (message,) = [m for m in slack.messages.values() if m.get("thread_ts") == ts]
        assert message["text"].startswith("The Quaxley turbine") and "Sorry, I could not finish" in message["text"]
        assert "fell over" not in message["text"]
        assert not [m for m in slack.said("chat.postMessage") if m.get("thread_ts") == ts]
        await slack.wait_for(lambda: bool(slack.said("reactions.add")))

    _run(broken, scenario)
