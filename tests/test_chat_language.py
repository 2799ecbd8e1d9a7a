"""The bot's own status lines in the person's language, over real HTTP on both surfaces: a shared file's progress
and outcome in the sharer's chat locale (Slack's users.info, Teams' activity locale), and the status shown while
a question is answered in the question's language. English stays as it was (tests/test_slack.py, test_teams.py)."""

from __future__ import annotations

import asyncio
import re
from uuid import uuid4

import pytest

from agent.language import language_of_locale
from bot.assistant import Assistant
from bot.bench.fakes.bot_connector import LoopbackConnector
from bot.bench.fakes.slack_loopback import Loopback
from bot.jobs import describe, reading
from tests.test_slack import _answers, _event, _mention, _run, _ts
from tests.test_teams import GUIDE, fixture, teams_endpoint, warmed
from workers.client import JobStatus

NOTES = b"# Turbine notes\n\nThe Quaxley turbine must be serviced every 417 operating hours.\n"
CHINESE = "Quaxley 涡轮机需要多久维护一次？"
SPANISH = "¿Qué puerto usa la pasarela Zorblax para el tráfico de administración?"


@pytest.fixture(scope="module")
def assistant(services, worker) -> Assistant:
    return warmed(Assistant(services.model_copy(update={"teams_ack_after_s": 10.0})))


def test_describe_speaks_the_sharers_language_and_leaves_english_and_unknown_stages_as_they_were():
    running, embedding = JobStatus("j", "running", "saving"), JobStatus("j", "running", "embedding", 3, 9)
    ready = JobStatus("j", "done", "done", result={"status": "ready", "chunks": 4})
    unchanged = JobStatus("j", "done", "done", result={"status": "unchanged", "reason": "same content"})
    error = JobStatus("j", "error", error="MemoryError: 3 GiB")
    assert [describe(s, "a.md", "es") for s in (running, embedding, ready, unchanged, error)] == [
        "Leyendo a.md: guardando",
        "Leyendo a.md: 3/9 pasajes",
        "a.md está listo: 4 pasajes.",
        "a.md está listo (sin cambios: same content).",  # the worker's reason stays English
        "No se pudo leer a.md: it needed more memory than a worker has (the details are in the bot's log).",
    ]
    assert [describe(s, "a.md") for s in (running, embedding, ready, unchanged)] == [
        "Reading a.md: saving",
        "Reading a.md: 3/9 passages",
        "a.md is ready: 4 passages.",
        "a.md is ready (unchanged: same content).",
    ]
    assert describe(ready, "a.md", "de") == "a.md is ready: 4 passages."  # no translation: English
    assert reading("a.md", "a new stage", "ja") == "a.md を読み込み中：a new stage"
    assert [language_of_locale(x) for x in ("ja-JP", "zh-TW", "es-ES", "en-GB", None)] == [
        "ja",
        "zh-tw",
        "es",
        "en",
        "en",
    ]


def test_slack_a_file_shared_by_a_spanish_speaker_is_followed_in_spanish(assistant):
    team = f"T{uuid4().hex[:8].upper()}"

    async def scenario(lb: Loopback) -> None:
        slack = lb.slack
        slack.add_channel("C0ES")
        slack.locales["U0ES"] = "es-ES"
        shared_ts = _ts()
        slack.add_file("F0NOTES", "notas.md", NOTES, mimetype="text/markdown", channel="C0ES", message_ts=shared_ts)
        share = _event("message_file_share.json", team, channel="C0ES", channel_type="channel", ts=shared_ts,
                       event_ts=shared_ts, user="U0ES", files=[{"id": "F0NOTES"}])  # fmt: skip
        assert (await lb.post(share))[0] == 200

        def finished() -> bool:
            texts = [str(u.get("text")) for u in slack.said("chat.update")]
            return any("notas.md" in t and not t.startswith(("Leyendo", "Reading")) for t in texts)

        await slack.wait_for(finished, timeout=120)
        (status,) = [m for m in slack.said("chat.postMessage") if "notas.md" in str(m.get("text"))]
        assert status["text"] == "Leyendo notas.md: descargando"
        updates = [str(u["text"]) for u in slack.said("chat.update")]
        assert updates[0] == "Leyendo notas.md: en cola"
        assert re.fullmatch(r"notas\.md está listo: \d+ pasajes\.", updates[-1]), updates

    _run(assistant, scenario)


def test_slack_a_chinese_question_shows_its_status_and_loading_messages_in_chinese(assistant):
    team = f"T{uuid4().hex[:8].upper()}"

    async def scenario(lb: Loopback) -> None:
        slack = lb.slack
        slack.add_channel("C0ZH")
        ask_ts = _ts()
        await lb.post(_mention(team, "C0ZH", CHINESE, ask_ts))
        await slack.wait_for(lambda: bool(_answers(slack, ask_ts)), timeout=120)
        said = [s for s in slack.said("assistant.threads.setStatus") if s["thread_ts"] == ask_ts]
        assert [s["status"] for s in said] == ["正在搜索文档…", "正在撰写回答…"]
        assert said[0]["loading_messages"] == ["正在搜索文档…", "正在阅读最相关的段落…", "正在撰写回答…"]

    _run(assistant, scenario)


def test_teams_a_file_from_a_japanese_client_is_followed_in_japanese(assistant):
    tenant, personal = f"teams-{uuid4().hex[:8]}", f"a:{uuid4().hex}"

    async def scenario() -> list[str]:
        async with teams_endpoint(assistant, tenant) as teams:
            attachment = fixture("file_download_info_attachment.json")
            attachment["content"]["downloadUrl"] = teams.connector.serve_file("guide.md", GUIDE, "text/markdown")
            message = teams.activity(
                "message_personal.json", text="", conversation=personal, attachments=[attachment], locale="ja-JP"
            )
            await teams.post(message)
            done = await teams.seen(personal, lambda s: "guide.md の" in s.text or "guide.md is" in s.text, 180)
            assert re.fullmatch(r"guide\.md の準備ができました：\d+ 個の段落。", done.text), done.text
            return [s.text for s in teams.connector.sent if s.conversation == personal]

    said = asyncio.run(scenario())
    assert said[0] == "guide.md をダウンロードしています ..."


def test_teams_a_spanish_question_gets_its_informative_updates_in_spanish(assistant):
    tenant, personal = f"teams-{uuid4().hex[:8]}", f"a:{uuid4().hex}"

    async def scenario() -> list[str]:
        connector = LoopbackConnector(min_interval_s=0.0)  # every informative update is sent, none throttled
        async with teams_endpoint(assistant, tenant, connector, stream_every_s=0.0) as teams:
            await teams.post(teams.activity("message_personal.json", text=SPANISH, conversation=personal))
            await teams.reply(personal, lambda s: s.ai_generated, 120)
            return [s.text for s in connector.sent if s.conversation == personal and s.stream_type == "informative"]

    assert asyncio.run(scenario()) == ["Buscando en los documentos…", "Escribiendo la respuesta…"]
