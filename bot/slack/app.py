"""The Slack surface: a bolt `AsyncApp` whose listeners translate Slack payloads to the `Assistant` and back.

Slack's contract is kept here: every request is acknowledged at once (events are acknowledged by bolt before
their listener runs; commands and buttons ack first and work after), deliveries are
deduplicated by event id in Redis (so Slack's retries and a second bot process see the same record), Web API
calls back off on HTTP 429, and every failure reaches the user as one short line and the log in full.

Audience: tenant = workspace (team id), scope = channel id; conversation memory = channel + thread ts. In the
bot's own chat (Slack's agent view), the channel the person is viewing adds its documents if they are a member
(`bot.slack.context`). Answers stream into the thread (`bot.slack.streaming`).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from slack_bolt.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from agent import keys
from agent.language import detect_language
from agent.logging_setup import log_context
from agent.settings import Settings
from agent.types import Audience
from bot.assistant import Assistant
from bot.conversation import Conversation
from bot.downloads import DownloadError
from bot.slack.agent_view import AgentView, team_of
from bot.slack.blocks import FEEDBACK, VOTE_DOWN, VOTE_UP, answer_blocks, answer_fallback, escape, read_feedback
from bot.slack.context import SlackContext
from bot.slack.escaping import make_client as make_client
from bot.slack.files import fetch_shared_file
from bot.slack.streaming import SEARCHING, WRITING, SlackReply, streamable

log = logging.getLogger(__name__)

FAILED = "warning"
THREAD_TTL_S = 30 * 24 * 3600
HANDLED_SUBTYPES = (None, "file_share", "thread_broadcast")
"""Message subtypes that are a person writing; edits, deletions, joins and bot messages are not."""
MENTION = re.compile(r"<@[UW][A-Z0-9]+(?:\|[^>]*)?>")


def question_text(text: str) -> str:
    """The message without @-mentions of the bot (or anyone) and surrounding blanks."""
    return MENTION.sub(" ", text).strip()


class SlackBot(AgentView):
    """One per process: the bolt app, its listeners, and the state they share (HTTP session, privacy cache)."""

    def __init__(self, settings: Settings, assistant: Assistant, *, client: AsyncWebClient | None = None) -> None:
        self.settings = settings
        self.assistant = assistant
        self._session: aiohttp.ClientSession | None = None
        self.client = client or make_client(settings.slack_bot_token, settings.slack_api_url, self.session)
        # Questions wait in a queue as a few small dicts (not as listeners holding bolt's request and context:
        # 2,000 of those made the garbage collector pause the event loop) and a few workers take them in turn,
        # so that a burst of events leaves the event loop free to acknowledge the next requests at once.
        self._questions: asyncio.Queue[tuple[dict[str, Any], str, dict[str, Any], str]] = asyncio.Queue()
        self._workers: list[asyncio.Task[None]] = []
        self.handled = 0
        """Questions whose handling has ended (answered, or the failure reported): what `slack --local` waits on."""
        verify = bool(settings.slack_signing_secret)
        self.app = AsyncApp(
            client=self.client,
            signing_secret=settings.slack_signing_secret or "socket-mode-needs-no-secret",
            request_verification_enabled=verify,
            process_before_response=False,
        )
        self.context = SlackContext(self.client, assistant.redis)
        self._register()

    def _register(self) -> None:
        app = self.app
        app.event("app_mention")(self.on_mention)
        app.event("message")(self.on_message)
        app.event("file_shared")(self.on_file_shared)
        app.event("assistant_thread_started")(self.on_thread_started)
        app.event("assistant_thread_context_changed")(self.on_context_changed)
        app.command("/ask")(self.on_ask)
        app.command("/expert")(self.on_expert)
        app.action(re.compile(f"^({FEEDBACK}|{VOTE_UP}|{VOTE_DOWN})$"))(self.on_vote)
        app.error(self.on_error)
        app.middleware(self._request_id)

    @staticmethod
    async def _request_id(body: dict[str, Any], next: Callable[[], Awaitable[Any]]) -> Any:
        """Every log line of a request carries its id (event id, or the trigger id of a command or click)."""
        rid = body.get("event_id") or body.get("trigger_id") or body.get("envelope_id")
        with log_context(request=str(rid) if rid else None):
            return await next()

    async def close(self) -> None:
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    # --- events ---------------------------------------------------------------------------------------------

    async def on_mention(self, body: dict[str, Any], event: dict[str, Any]) -> None:
        team = team_of(body)
        if event.get("files"):
            if await self._first_delivery(body):
                await self._share_files(team, event)
            return
        await self._answer_event(body, team, event, question_text(str(event.get("text") or "")))

    async def on_message(self, body: dict[str, Any], event: dict[str, Any], context: dict[str, Any]) -> None:
        if event.get("bot_id") or event.get("subtype") not in HANDLED_SUBTYPES:
            return  # other bots (bolt already drops our own), edits, deletions, joins
        team, text = team_of(body), str(event.get("text") or "")
        bot_user = context.get("bot_user_id")
        direct = event.get("channel_type") == "im"
        mentioned = bool(bot_user) and f"<@{bot_user}" in text
        if mentioned and not direct:
            return  # the app_mention event for the same message answers it
        thread_ts = event.get("thread_ts")
        if not (
            direct or event.get("files") or (thread_ts and await self._in_thread(team, event["channel"], thread_ts))
        ):
            return  # a channel message not meant for us
        if event.get("files"):
            if await self._first_delivery(body):
                await self._share_files(team, event)
        elif question_text(text):
            await self._answer_event(body, team, event, question_text(text))

    async def on_file_shared(self, body: dict[str, Any], event: dict[str, Any]) -> None:
        if not await self._first_delivery(body):
            return
        channel, file_id = event.get("channel_id"), event.get("file_id") or (event.get("file") or {}).get("id")
        if channel and file_id:
            user = str(event.get("user_id") or "")
            await self._share(team_of(body), channel, None, None, user, str(file_id))

    async def _answer_event(self, body: dict[str, Any], team: str, event: dict[str, Any], text: str) -> None:
        """Queue the question; the duplicate check is the first thing a worker does with it."""
        if not self._workers:
            n = 2 * self.settings.answer_concurrency
            self._workers = [asyncio.create_task(self._answer_worker()) for _ in range(n)]
        delivery = {"event_id": body.get("event_id"), "team_id": team}
        self._questions.put_nowait((delivery, team, event, text))

    async def _answer_worker(self) -> None:
        while True:
            delivery, team, event, text = await self._questions.get()
            try:
                with log_context(request=str(delivery.get("event_id") or event.get("ts") or "")):
                    if await self._first_delivery(delivery):
                        await self._answer_now(team, event, text)
            except Exception as exc:  # e.g. Redis unreachable for the duplicate check
                await self._report(exc, "answer that", event["channel"], event.get("thread_ts") or event["ts"])
            finally:
                self.handled += 1
                self._questions.task_done()

    async def _answer_now(self, team: str, event: dict[str, Any], text: str) -> None:
        """Status, then the answer streamed into the thread (or posted then updated), with sources and feedback."""
        channel, ts = event["channel"], event["ts"]
        thread = event.get("thread_ts") or ts
        user = str(event.get("user") or "")
        reply: SlackReply | None = None
        try:
            conv = await self._conversation(team, channel, thread, user, event)
            if not text:
                await self._post(channel, thread, await self.assistant.command(conv, "help"))
                return
            first_in_own_chat = event.get("channel_type") == "im" and event.get("thread_ts")
            if first_in_own_chat and not await self._in_thread(team, channel, thread):
                await self._title(channel, thread, text)  # the first question names the thread
            recipient_team = str(event.get("user_team") or event.get("team") or team)
            language = await asyncio.to_thread(detect_language, text)  # the status speaks the answer's language
            stream = streamable(event)
            reply = SlackReply(
                self.client, channel, thread, team=recipient_team, user=user, stream=stream, language=language
            )
            await reply.status(SEARCHING)
            async for step in self.assistant.stream(conv, text):
                if step.kind == "route":
                    await reply.status(WRITING)
                elif step.kind == "text":
                    await reply.append(step.text)
                elif step.answer is not None:
                    await reply.finish(step.answer)
            await asyncio.to_thread(self._mark_thread, team, channel, thread)
        except Exception as exc:
            if reply is not None and await reply.abort(_sorry(exc, "finish this answer")):
                log.exception("could not answer in %s", channel, exc_info=exc)
            else:
                await self._report(exc, "answer that", channel, thread)
            await self._react("reactions_add", channel, ts, FAILED)

    # --- shared files ---------------------------------------------------------------------------------------

    async def _share_files(self, team: str, event: dict[str, Any]) -> None:
        thread = event.get("thread_ts") or event.get("ts")
        for f in event.get("files") or []:
            if f.get("id"):
                await self._share(
                    team, event["channel"], thread, event.get("ts"), str(event.get("user") or ""), f["id"]
                )

    async def _share(
        self, team: str, channel: str, thread: str | None, message_ts: str | None, user: str, file_id: str
    ) -> None:
        """Download one file, queue it with this channel's audience, and keep one thread message up to date."""
        # A file arrives twice (a message with files[] and a file_shared event): whichever comes first wins.
        if not await asyncio.to_thread(self.assistant.first_delivery, "slack-file", f"{team}:{channel}:{file_id}"):
            return
        status_ts: str | None = None
        try:
            try:
                shared = await fetch_shared_file(
                    self.client, self.session, file_id, channel, max_bytes=self.settings.max_upload_bytes
                )
            except DownloadError as exc:
                await self._post(channel, thread, str(exc))
                return
            thread = thread or shared.message_ts
            message_ts = message_ts or shared.message_ts
            conv = await self._conversation(team, channel, thread or f"file-{file_id}", user, None)
            from bot.jobs import reading  # with the workers' client: imported when a file is shared, not at start

            language = await self.context.language(user) if user else "en"  # the sharer's Slack locale
            status_ts = await self._post(channel, thread, reading(shared.name, "downloading", language))
            link = await self._permalink(channel, message_ts)
            async for step in self.assistant.share(conv, shared.data, shared.name, link=link, language=language):
                await self.client.chat_update(channel=channel, ts=status_ts, text=step.text)
        except Exception as exc:
            await self._report(exc, "read that file", channel, thread, replace=status_ts)

    async def _permalink(self, channel: str, ts: str | None) -> str | None:
        if not ts:
            return None
        try:
            return str((await self.client.chat_getPermalink(channel=channel, message_ts=ts))["permalink"])
        except (SlackApiError, KeyError):
            log.warning("no permalink for %s/%s", channel, ts, exc_info=True)
            return None

    # --- slash commands and buttons: ack at once, then work ----------------------------------------------------
    # bolt returns the acknowledgement as soon as ack() is called and runs the rest of the listener after it.
    # (Not lazy listeners: those deep-copy the request context, which holds the shared HTTP session.)

    async def on_ask(self, ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
        question = str(body.get("text") or "").strip()
        if not question:
            await ack("Ask a question after the command, e.g. `/ask How many vacation days do I get?`")
            return
        await ack()
        await self._ask(body, respond, question)

    async def on_expert(self, ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        text = str(body.get("text") or "").strip()
        name, _, rest = text.partition(" ")
        if name.lower() == "ask":
            await self._ask(body, respond, rest.strip())
            return
        try:
            conv = await self._command_conversation(body)
            reply = await self.assistant.command(conv, text)
            await respond(text=escape(reply), response_type="ephemeral")
        except Exception as exc:
            log.exception("/expert %s failed", text)
            await respond(text=_sorry(exc, "run that command"), response_type="ephemeral")

    async def _ask(self, body: dict[str, Any], respond: AsyncRespond, question: str) -> None:
        try:
            if not question:
                await respond(text="Ask a question after `ask`.", response_type="ephemeral")
                return
            conv = await self._command_conversation(body)
            answer = await self.assistant.answer(conv, question)
            blocks = answer_blocks(answer, question=question, asker=body.get("user_id"))
            await respond(text=escape(answer_fallback(answer)), blocks=blocks, response_type="in_channel")
        except Exception as exc:
            log.exception("/ask failed: %s", question)
            await respond(text=_sorry(exc, "answer that"), response_type="ephemeral")

    async def on_vote(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        action = (body.get("actions") or [{}])[0]
        user = str((body.get("user") or {}).get("id") or "")
        channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id")
        thread = (body.get("container") or {}).get("thread_ts")
        try:
            answer_id, helpful = read_feedback(action) or ("", False)
            stored = bool(answer_id) and await asyncio.to_thread(self.assistant.vote, answer_id, user, helpful)
            text = (
                "Thanks, noted: your feedback teaches the domain model."
                if stored
                else "I no longer know that answer (it expired), so the vote was not recorded."
            )
        except Exception as exc:
            log.exception("storing a vote failed")
            text = _sorry(exc, "record your vote")
        if channel:
            await self.client.chat_postEphemeral(channel=channel, user=user, text=text, thread_ts=thread)

    async def on_error(self, error: Exception, body: dict[str, Any]) -> None:
        log.error("unhandled error for %s: %s", body.get("type"), error, exc_info=error)

    # --- helpers --------------------------------------------------------------------------------------------

    async def _first_delivery(self, body: dict[str, Any]) -> bool:
        event_id = body.get("event_id")
        if not event_id:
            return True
        first = await asyncio.to_thread(self.assistant.first_delivery, "slack", f"{team_of(body)}:{event_id}")
        if not first:
            log.info("dropping a redelivery of %s", event_id)
        return first

    def _thread_key(self, team: str, channel: str, thread: str) -> str:
        return keys.slack_thread(team, channel, thread)

    def _mark_thread(self, team: str, channel: str, thread: str) -> None:
        self.assistant.redis.set(self._thread_key(team, channel, thread), b"1", ex=THREAD_TTL_S)

    async def _in_thread(self, team: str, channel: str, thread: str) -> bool:
        """Whether the bot has answered in this thread: follow-ups there need no new mention."""
        return bool(await asyncio.to_thread(self.assistant.redis.exists, self._thread_key(team, channel, thread)))

    async def _conversation(
        self, team: str, channel: str, thread: str, user: str, event: dict[str, Any] | None
    ) -> Conversation:
        channel_type = (event or {}).get("channel_type")
        private = await self.context.is_private(channel, channel_type)
        audience = await self.context.audience(team, channel, thread, user, channel_type, event)
        return Conversation("slack", audience, f"{channel}:{thread}", user, private)

    async def _command_conversation(self, body: dict[str, Any]) -> Conversation:
        channel = str(body.get("channel_id") or "")
        hint = {"directmessage": "im", "privategroup": "group"}.get(str(body.get("channel_name") or ""))
        private = await self.context.is_private(channel, hint)
        thread = f"{channel}:command:{body.get('trigger_id') or time.time()}"
        return Conversation("slack", Audience(team_of(body), channel), thread, str(body.get("user_id") or ""), private)

    async def _post(self, channel: str, thread: str | None, text: str) -> str:
        resp = await self.client.chat_postMessage(channel=channel, thread_ts=thread, text=text)
        return str(resp.get("ts") or "")

    async def _react(self, method: str, channel: str, ts: str, name: str) -> None:
        """The working indicator is a courtesy: a failed reaction never stops the answer."""
        try:
            await getattr(self.client, method)(channel=channel, timestamp=ts, name=name)
        except SlackApiError as exc:
            log.debug("%s %s failed: %s", method, name, exc.response.get("error"))

    async def _report(
        self, exc: Exception, what: str, channel: str, thread: str | None, *, replace: str | None = None
    ) -> None:
        """The user gets one line, the log gets the traceback; a failure to tell the user is logged too."""
        log.exception("could not %s in %s", what, channel, exc_info=exc)
        try:
            if replace:
                await self.client.chat_update(channel=channel, ts=replace, text=_sorry(exc, what))
            else:
                await self._post(channel, thread, _sorry(exc, what))
        except Exception:
            log.exception("could not tell the user in %s about the failure", channel)


def _sorry(exc: BaseException, what: str) -> str:
    return f"Sorry, I could not {what}: an internal error ({type(exc).__name__}). The details are in the bot's log."
