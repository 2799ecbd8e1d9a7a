"""The Teams activity handler: it translates activities to `Assistant` calls and replies back, nothing more.

A message turn does only what must happen within Teams' request time: drop a redelivered activity, strip the
bot's @mention, and hand the work to a background task that replies proactively. In a personal chat the answer
streams (`bot.teams.streaming`); elsewhere a typing indicator precedes one message. Either way the answer ends
as Teams' AI message (`bot.teams.ai_message`): citations, AI label, and the feedback loop whose submissions
(`message/submitAction`) are stored as votes with their comment.
"""

from __future__ import annotations

import asyncio
import html
import logging
import re
from dataclasses import dataclass
from typing import Any

import aiohttp
from botbuilder.core import ActivityHandler, InvokeResponse, MessageFactory, TurnContext
from botbuilder.schema import (
    Activity,
    ActivityTypes,
    Attachment,
    ChannelAccount,
    ConversationReference,
)
from msrest.serialization import Model

from agent import keys
from agent.language import detect_language, language_of_locale, phrase
from agent.types import Audience
from bot.assistant import Assistant
from bot.conversation import Answer, Conversation
from bot.downloads import DownloadError, fetch_file
from bot.teams.ai_message import answer_activity, read_feedback
from bot.teams.cards import FEEDBACK_VERB, read_vote
from bot.teams.proactive import Messenger
from bot.teams.streaming import CHUNK_EVERY_S, TeamsStream
from bot.url_policy import PublicResolver, UrlPolicy, local_policy, teams_download_policy

log = logging.getLogger(__name__)

FILE_DOWNLOAD_INFO = "application/vnd.microsoft.teams.file.download.info"
COMMANDS = frozenset({"help", "status", "docs", "forget", "teach", "retrain"})
ANSWER_TTL_S = 30 * 24 * 3600
"""How long Teams' feedback on an answer message can still be matched to the answer."""
SEARCHING, WRITING = "working_searching", "working_writing"
"""The informative updates' phrases (agent/phrases.yaml), in the question's language."""
SORRY = "Sorry, something went wrong while answering. The details are in the bot's log."

WELCOME = (
    "Hi! I answer questions about your company's domain, citing the documents shared with me. "
    "Ask me anything, send me a document in a personal chat, or type help."
)
CHANNEL_FILES = (
    "Teams does not hand files shared in channels or group chats to bots, so I cannot read {names}. "
    "To make a document knowledge here, an admin can run: expertbot ingest FILE --tenant {tenant} --scope {scope}. "
    "To keep it to yourself, send it to me in a personal chat (it is then knowledge of that chat only)."
)


class InvokeMessage(Model):
    """The Universal Actions response that shows a short message: botbuilder serializes only msrest models."""

    _attribute_map = {  # noqa: RUF012 (msrest reads it per class)
        "status_code": {"key": "statusCode", "type": "int"},
        "type": {"key": "type", "type": "str"},
        "value": {"key": "value", "type": "str"},
    }

    def __init__(self, text: str) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.status_code = 200
        self.type = "application/vnd.microsoft.activity.message"
        self.value = text


@dataclass(frozen=True)
class Incoming:
    """A message reduced to what the assistant needs."""

    conversation: Conversation
    text: str
    personal: bool
    addressed: bool
    """Personal chats always; elsewhere only when the bot was @mentioned."""
    channel: bool = False
    """A team channel (not a personal or group chat): Teams draws no citations or feedback buttons there."""
    language: str = "en"
    """The sender's Teams locale (the activity's), for the lines about the files they send."""


def conversation_of(activity: Activity, default_tenant: str) -> Conversation:
    """Audience = Teams tenant + conversation; a channel thread's scope is its channel (documents stay there)."""
    conv = activity.conversation
    channel_data = activity.channel_data if isinstance(activity.channel_data, dict) else {}
    tenant_data = channel_data.get("tenant") if isinstance(channel_data.get("tenant"), dict) else {}
    tenant = conv.tenant_id or (tenant_data or {}).get("id") or default_tenant
    scope = conv.id.split(";messageid=", 1)[0]
    kind = conv.conversation_type or "personal"  # the Emulator sends none
    sender: ChannelAccount = activity.from_property
    user = sender.aad_object_id or sender.id or "unknown"
    return Conversation("teams", Audience(tenant, scope), conv.id, user, private=kind != "channel" or _closed(activity))


PRIVATE_CHANNEL_TYPES = frozenset({"private", "shared"})
"""Teams channels whose members are not the whole team: what is taught there stays there."""


def _closed(activity: Activity) -> bool:
    """A private or shared channel (channelData.channel.membershipType or .type), not a standard one."""
    channel_data = activity.channel_data if isinstance(activity.channel_data, dict) else {}
    channel = channel_data.get("channel") if isinstance(channel_data.get("channel"), dict) else {}
    kind = (channel or {}).get("membershipType") or (channel or {}).get("type") or ""
    return str(kind).lower() in PRIVATE_CHANNEL_TYPES


def strip_mentions(activity: Activity) -> tuple[str, bool]:
    """The text without the bot's @mention (what Teams puts in it: `<at>Expert</at>`), and whether it had one."""
    text = activity.text or ""
    mentioned = False
    for entity in activity.entities or []:
        props: dict[str, Any] = {**(entity.additional_properties or {}), **entity.as_dict()}
        if (entity.type or "").lower() != "mention":
            continue
        who = props.get("mentioned") or {}
        if who.get("id") != activity.recipient.id:
            continue
        mentioned = True
        shown = props.get("text") or f"<at>{who.get('name', '')}</at>"
        text = text.replace(shown, " ")
    text = re.sub(r"<at>[^<]*</at>", " ", text) if mentioned else text
    text = html.unescape(re.sub(r"<[^>]+>", " ", text))  # Teams may wrap text in HTML (<p>, <div>)
    return " ".join(text.split()), mentioned


def plain_message(text: str) -> Activity:
    """A text message shown exactly as written (escaped HTML, line breaks kept)."""
    message = MessageFactory.text(html.escape(text, quote=False).replace("\n", "<br>"))
    message.text_format = "xml"
    return message


class TeamsBot(ActivityHandler):  # type: ignore[misc]
    """Personal chats, group chats and channel @mentions; cards, commands, files and votes."""

    def __init__(self, assistant: Assistant, messenger: Messenger) -> None:
        self.assistant = assistant
        self.messenger = messenger
        self._session: aiohttp.ClientSession | None = None
        self.stream_every_s = CHUNK_EVERY_S
        """How often a streamed answer's text is sent (Teams throttles faster streams)."""
        self._streaming: set[str] = set()
        """Chats with a stream open: Teams allows one at a time, so another answer there is sent whole."""

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    # --- messages -----------------------------------------------------------------------------------------

    async def on_message_activity(self, turn_context: TurnContext) -> None:
        activity = turn_context.activity
        if activity.id and not self.assistant.first_delivery("teams", f"{activity.conversation.id}|{activity.id}"):
            log.info("dropped a redelivered activity %s", activity.id)
            return
        if activity.value and not activity.text:  # an Action.Submit from an older client: same as the invoke
            await turn_context.send_activity(plain_message(self._vote(activity.value, activity)))
            return
        incoming = self._incoming(activity)
        if not incoming.addressed:
            return
        reference = TurnContext.get_conversation_reference(activity)
        files = [a for a in activity.attachments or [] if a.content_type == FILE_DOWNLOAD_INFO]
        others = [a for a in activity.attachments or [] if a.content_type not in (FILE_DOWNLOAD_INFO, "text/html")]
        if files and incoming.personal:
            for attachment in files:
                work = self._ingest(reference, incoming.conversation, attachment, incoming.language)
                self.messenger.spawn(work, "teams-ingest")
            if not incoming.text:
                return
        elif (files or others) and not incoming.personal:
            names = ", ".join(a.name or "that file" for a in files + others)
            audience = incoming.conversation.audience
            await turn_context.send_activity(
                plain_message(CHANNEL_FILES.format(names=names, tenant=audience.tenant, scope=audience.scope))
            )
            if not incoming.text:
                return
        if not incoming.text:
            await turn_context.send_activity(plain_message("Ask me a question, or type help."))
            return
        self.messenger.spawn(self._respond(reference, incoming, incoming.text), "teams-answer")

    def _incoming(self, activity: Activity) -> Incoming:
        conv = conversation_of(activity, self.assistant.settings.default_tenant)
        text, mentioned = strip_mentions(activity)
        kind = activity.conversation.conversation_type or "personal"
        personal, language = kind == "personal", language_of_locale(activity.locale)
        return Incoming(conv, text, personal, personal or mentioned, kind == "channel", language)

    async def _respond(self, reference: ConversationReference, incoming: Incoming, text: str) -> None:
        """A command's reply, or an answer: streamed in a personal chat, else one message after a typing indicator."""
        name, _, rest = text.partition(" ")
        question = rest.strip() if name.lower() == "ask" else text
        if name.lower() in COMMANDS or not question:
            await self._reply(reference, incoming.conversation, text)
        elif incoming.personal and incoming.conversation.thread not in self._streaming:
            await self._stream_answer(reference, incoming.conversation, question)
        else:
            await self._reply(reference, incoming.conversation, text, channel=incoming.channel)

    async def _stream_answer(self, reference: ConversationReference, conv: Conversation, question: str) -> None:
        self._streaming.add(conv.thread)
        stream = TeamsStream(self.messenger, reference, every_s=self.stream_every_s)
        language = await asyncio.to_thread(detect_language, question)  # the answer's, and so the updates'
        try:
            await stream.inform(phrase(SEARCHING, language))
            answer: Answer | None = None
            async for step in self.assistant.stream(conv, question):
                if step.kind == "route":
                    await stream.inform(phrase(WRITING, language))
                elif step.kind == "text":
                    await stream.append(step.text)
                else:
                    answer = step.answer
            if answer is None:
                raise RuntimeError("the answer stream ended without an answer")
            message_id = await stream.finish(answer_activity(answer, channel=False))
            await asyncio.to_thread(self._remember_message, reference, message_id, answer.answer_id)
        except Exception:
            log.exception("answering %r in %s failed", question[:80], conv.thread)
            await stream.finish(plain_message(SORRY))
        finally:
            self._streaming.discard(conv.thread)

    def _remember_message(self, reference: ConversationReference, message_id: str, answer_id: str) -> None:
        """Which answer a message carries: Teams' feedback names the message, the vote needs the answer."""
        if message_id:
            key = keys.teams_answer_message(_base(reference.conversation.id), message_id)
            self.assistant.redis.set(key, answer_id.encode(), ex=ANSWER_TTL_S)

    async def _reply(
        self, reference: ConversationReference, conv: Conversation, text: str, *, channel: bool = False
    ) -> None:
        """A command or a whole answer; a slow one is preceded by an acknowledgement, a failure by an apology."""
        work = asyncio.ensure_future(self._reply_for(conv, text, channel))
        answer_id: str | None = None
        try:
            # Sent from here, not in the turn, so that the turn's HTTP answer does not wait for it.
            await self._courtesy(reference, Activity(type=ActivityTypes.typing))
            done, _ = await asyncio.wait({work}, timeout=self.assistant.settings.teams_ack_after_s)
            if not done:
                await self._courtesy(reference, plain_message("Working on it: I'll answer here in a moment."))
            reply, answer_id = await work
        except Exception:
            log.exception("answering %r in %s failed", text[:80], conv.thread)
            reply = plain_message(SORRY)
        message_id = await self.messenger.send(reference, reply)
        if answer_id:
            await asyncio.to_thread(self._remember_message, reference, message_id, answer_id)

    async def _courtesy(self, reference: ConversationReference, activity: Activity) -> None:
        """A typing indicator or an acknowledgement: if it cannot be delivered, the answer is still worth trying."""
        try:
            await self.messenger.send(reference, activity)
        except Exception as exc:
            log.warning("could not send a %s activity to %s: %s", activity.type, reference.conversation.id, exc)

    async def _reply_for(self, conv: Conversation, text: str, channel: bool) -> tuple[Activity, str | None]:
        """The reply and, for an answer, its id."""
        name, _, rest = text.partition(" ")
        if name.lower() in COMMANDS:
            return plain_message(await self.assistant.command(conv, text)), None
        question = rest.strip() if name.lower() == "ask" else text
        if not question:
            return plain_message("What would you like to know? Write: ask <question>."), None
        answer: Answer | None = None
        async for step in self.assistant.stream(conv, question):
            answer = step.answer or answer
        if answer is None:
            raise RuntimeError("the answer stream ended without an answer")
        return answer_activity(answer, channel=channel), answer.answer_id

    # --- files --------------------------------------------------------------------------------------------

    async def _ingest(
        self, reference: ConversationReference, conv: Conversation, attachment: Attachment, language: str = "en"
    ) -> None:
        """Download a file sent in a personal chat, ingest it with that chat's audience, report progress (in the
        sender's `language`)."""
        name = attachment.name or "document"
        content = attachment.content if isinstance(attachment.content, dict) else {}
        url = content.get("downloadUrl")
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            await self.messenger.send(reference, plain_message(f"I could not find a download link for {name}."))
            return
        downloading = plain_message(phrase("status_downloading", language, name=name))
        progress_id = await self.messenger.send(reference, downloading)

        async def show(text: str) -> None:  # one message per file, edited from "downloading" to the outcome
            if progress_id:
                await self.messenger.update(reference, progress_id, plain_message(text))
            else:
                await self.messenger.send(reference, plain_message(text))

        try:
            data = await fetch_file(
                self._http(), url, name, max_bytes=self.assistant.settings.max_upload_bytes, policy=self._policy()
            )
        except DownloadError as exc:
            await show(str(exc))
            return
        async for step in self.assistant.share(conv, data, name, link=attachment.content_url, language=language):
            await show(step.text)

    def _policy(self) -> UrlPolicy:
        """Local (Emulator) mode: loopback only. Otherwise https from SharePoint/OneDrive, public addresses only."""
        settings = self.assistant.settings
        if not settings.teams_auth_enabled:
            return local_policy()
        return teams_download_policy(settings.teams_download_hosts)

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            # Outside the local mode, names resolve to public addresses only, for every hop of a download.
            local = not self.assistant.settings.teams_auth_enabled
            connector = None if local else aiohttp.TCPConnector(resolver=PublicResolver())
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    # --- votes --------------------------------------------------------------------------------------------

    async def on_invoke_activity(self, turn_context: TurnContext) -> InvokeResponse | None:
        """👍/👎 clicks (`adaptiveCard/action`, verb "feedback"); other invokes get botbuilder's default answer.

        Answered here rather than in `on_adaptive_card_invoke` because botbuilder types the response's `value`
        as an object, and a message response carries a string.
        """
        activity = turn_context.activity
        if activity.name == "message/submitAction":
            await asyncio.to_thread(self._feedback, activity)
            return InvokeResponse(status=200)  # no body: Teams itself tells the person their feedback was sent
        if activity.name != "adaptiveCard/action":
            return await super().on_invoke_activity(turn_context)
        value: dict[str, Any] = activity.value if isinstance(activity.value, dict) else {}
        action: dict[str, Any] = value["action"] if isinstance(value.get("action"), dict) else {}
        if action.get("type") != "Action.Execute" or action.get("verb") != FEEDBACK_VERB:
            said = "I don't know that button."
        else:
            said = self._vote(action.get("data"), activity)
        return InvokeResponse(status=200, body=InvokeMessage(said))

    def _feedback(self, activity: Activity) -> None:
        """Teams' own 👍/👎 (and the text typed with it) on an answer message: stored as a vote with its comment."""
        feedback = read_feedback(activity.value)
        if feedback is None or not activity.reply_to_id:
            log.info("a message/submitAction that is not feedback on an answer: %s", activity.value)
            return
        key = keys.teams_answer_message(_base(activity.conversation.id), activity.reply_to_id)
        answer_id = self.assistant.redis.get(key)
        user = activity.from_property.aad_object_id or activity.from_property.id or "unknown"
        helpful, comment = feedback
        if answer_id is None or not self.assistant.vote(answer_id.decode(), user, helpful, comment):
            log.info("feedback on %s, which carries no answer known now", activity.reply_to_id)

    def _vote(self, data: object, activity: Activity) -> str:
        vote = read_vote(data)
        if vote is None:
            return "I don't know that button."
        answer_id, helpful = vote
        user = activity.from_property.aad_object_id or activity.from_property.id or "unknown"
        if not self.assistant.vote(answer_id, user, helpful):
            return "That answer is too old to rate."
        return "Thanks: noted as helpful." if helpful else "Thanks: noted as not helpful; I'll learn from it."

    # --- installation -------------------------------------------------------------------------------------

    async def on_members_added_activity(self, members_added: list[ChannelAccount], turn_context: TurnContext) -> None:
        if any(m.id == turn_context.activity.recipient.id for m in members_added):
            await turn_context.send_activity(plain_message(WELCOME))


def _base(conversation_id: str) -> str:
    """A conversation without the channel thread part (`19:...;messageid=...` -> `19:...`)."""
    return conversation_id.split(";messageid=", 1)[0]
