"""What every chat surface does, in one place: Slack and Teams adapters only translate to and from this.

`Assistant` answers questions (the chat core, run off the event loop), runs the `/expert` commands, ingests
documents shared in a conversation with progress, records 👍/👎 votes, and drops redelivered events. A surface
describes where a message came from with a `Conversation`; everything else is platform-neutral.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import threading
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Executor
from multiprocessing.managers import SyncManager
from queue import Queue

import redis

from agent import keys
from agent.chat import ChatCore, StreamEvent, make_chat_core
from agent.knowledge.formats import FORMATS, upload_problem
from agent.learning import CuratedItem, LearningStore, parse_teach
from agent.models.registry import tenant_registry
from agent.settings import Settings
from agent.types import TENANT_WIDE, Audience, ChatReply, ChatRequest, Hit, Route
from bot.conversation import Answer, AnswerEvent, Conversation, ShareProgress
from bot.limits import RateLimit
from bot.suggestions import Suggestion, suggestions

log = logging.getLogger(__name__)

PROGRESS_POLL_S = 0.5
PROGRESS_EVERY_S = 1.0
"""Progress lines at most this often: Slack and Teams both throttle a bot's edits of one message."""

HELP = f"""I answer questions about your company's domain: from the documents shared with me, or as a domain expert.
Mention me, message me directly, or use /ask. Start a question with "docs:" or "expert:" to choose the route.
Share a document ({FORMATS}) with me and it becomes knowledge for this conversation.

Commands:
  ask <question>                   answer a question
  status                           documents, passages, queues, the domain model and its adapter
  docs                             the documents visible here
  forget <document>                remove a document shared here (admins)
  teach <term> :: <definition>     teach a term; used at the next retraining
  retrain                          retrain the domain adapter now (admins)
  help                             this help"""

TOO_MANY_QUESTIONS = "You are asking faster than I answer ({limit} questions a minute at most): try again in a moment."
TOO_MANY_SHARES = "{name} was not read: {limit} documents an hour is the most I take from one person. Try again later."


class Assistant:
    """One per bot process. Thread-safe; the heavy work runs in threads or answer processes, never on the event loop."""

    def __init__(
        self, settings: Settings, *, core: ChatCore | None = None, answer_pool: Executor | None = None
    ) -> None:
        self.settings = settings
        self._core = core
        self.answer_pool = answer_pool
        """Child processes that compute answers (`bot.answer_pool`); None computes them in threads here."""
        self._core_lock = threading.Lock()
        self._manager: SyncManager | None = None
        self._slots = asyncio.Semaphore(settings.answer_concurrency)
        self.redis: redis.Redis[bytes] = redis.Redis.from_url(settings.effective_redis_url)
        self.learning = LearningStore(self.redis, private_vote_retention_s=settings.vote_retention_days * 86400)
        self.question_limit = RateLimit(self.redis, "questions", settings.questions_per_minute, 60)
        self.share_limit = RateLimit(self.redis, "shares", settings.shares_per_hour, 3600)

    # --- the chat core ------------------------------------------------------------------------------------

    @property
    def core(self) -> ChatCore:
        """Built on first use (it loads the embedding model and connects to Milvus: seconds, not milliseconds)."""
        with self._core_lock:
            if self._core is None:
                self._core = make_chat_core(self.settings)
            return self._core

    async def warm_up(self) -> None:
        """Load the models and connect before the first question, so that it is not the slow one."""
        core = await asyncio.to_thread(lambda: self.core)
        await asyncio.to_thread(core.knowledge.search, Audience("warm-up", "warm-up"), "warm-up")
        # One whole answer loads what the first one would (language identifier, router): under a burst of
        # questions, every answer thread would otherwise load them at once. Pooled children warm themselves.
        if self.answer_pool is None:
            await asyncio.to_thread(core.answer, ChatRequest("What is the warm-up?", Audience("warm-up", "warm-up")))

    async def answer(self, conv: Conversation, text: str, forced_route: Route | None = None) -> Answer:
        if not await asyncio.to_thread(self.question_limit.allow, _who(conv)):
            limit = self.settings.questions_per_minute
            return Answer(ChatReply(TOO_MANY_QUESTIONS.format(limit=limit), "smalltalk", 1.0, "rate limited"), "")
        request = ChatRequest(text=text, audience=conv.audience, user=conv.user, thread=conv.thread)
        request.forced_route = forced_route
        async with self._slots:
            if self.answer_pool is None:
                reply = await asyncio.to_thread(self.core.answer, request)
            else:
                from bot.answer_pool import pooled_answer

                reply = await asyncio.get_running_loop().run_in_executor(self.answer_pool, pooled_answer, request)
        return await self._remember(conv, text, reply)

    async def _remember(self, conv: Conversation, question: str, reply: ChatReply) -> Answer:
        """Keep the answer for votes (indexed by the documents it cites, so forgetting one forgets it too)."""
        sources = [(h.scope, h.doc_id) for h in reply.sources]
        answer_id = await asyncio.to_thread(
            self.learning.remember_answer, conv.audience, question, reply.text, reply.route, sources
        )
        links = await asyncio.to_thread(self._links, conv.audience.tenant, sources)
        return Answer(reply, answer_id, links)

    async def stream(
        self, conv: Conversation, text: str, forced_route: Route | None = None
    ) -> AsyncIterator[AnswerEvent]:
        """The answer as it is produced (`ChatCore.stream`): the route, text chunks, then the whole `Answer`.

        The core runs in a thread, or in an answer process (`answer_pool`) that puts its events in a manager's
        queue; either way they reach the event loop as they come.
        """
        if not await asyncio.to_thread(self.question_limit.allow, _who(conv)):
            limit = self.settings.questions_per_minute
            refusal = ChatReply(TOO_MANY_QUESTIONS.format(limit=limit), "smalltalk", 1.0, "rate limited")
            yield AnswerEvent("done", answer=Answer(refusal, ""))
            return
        request = ChatRequest(text=text, audience=conv.audience, user=conv.user, thread=conv.thread)
        request.forced_route = forced_route
        streamed: list[str] = []
        numbered: list[tuple[int, Hit]] = []
        reply: ChatReply | None = None
        async with self._slots:
            async for event in self._core_events(request):
                if event.kind == "route":
                    yield AnswerEvent("route", route=event.route)
                elif event.kind == "text" and event.text:
                    streamed.append(event.text)
                    yield AnswerEvent("text", text=event.text)
                elif event.kind == "sources":
                    numbered = list(event.sources)
                elif event.kind == "done":
                    reply = event.reply
        if reply is None:
            raise RuntimeError("the answer stream ended without a reply")
        answer = await self._remember(conv, text, reply)
        answer.streamed, answer.numbered = "".join(streamed), numbered
        yield AnswerEvent("done", answer=answer)

    def _stream_queue(self) -> Queue[StreamEvent | BaseException | None]:
        """A queue the answer processes can put to (a manager's, started on first use: one small process)."""
        with self._core_lock:
            if self._manager is None:
                self._manager = multiprocessing.get_context("spawn").Manager()
            return self._manager.Queue()

    async def _core_events(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        loop = asyncio.get_running_loop()
        if self.answer_pool is not None:
            from bot.answer_pool import pooled_stream

            events = await asyncio.to_thread(self._stream_queue)
            done = loop.run_in_executor(self.answer_pool, pooled_stream, request, events)
            while (event := await asyncio.to_thread(events.get)) is not None:
                if isinstance(event, BaseException):
                    raise event
                yield event
            await done
            return
        queue: asyncio.Queue[StreamEvent | BaseException | None] = asyncio.Queue()
        stop = threading.Event()

        def produce() -> None:
            events: Iterator[StreamEvent] = self.core.stream(request)
            try:
                for event in events:
                    loop.call_soon_threadsafe(queue.put_nowait, event)
                    if stop.is_set():  # the surface gave up on this answer: stop generating
                        break
                loop.call_soon_threadsafe(queue.put_nowait, None)
            except BaseException as exc:  # handed to the event loop, raised there
                loop.call_soon_threadsafe(queue.put_nowait, exc)

        worker = asyncio.ensure_future(asyncio.to_thread(produce))
        try:
            while (item := await queue.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            await asyncio.shield(worker)

    # --- deliveries, votes, links -------------------------------------------------------------------------

    def first_delivery(self, surface: str, event_id: str) -> bool:
        """True the first time an event id is seen (across processes, within the dedup window)."""
        key = keys.seen_event(surface, event_id)
        return bool(self.redis.set(key, b"1", nx=True, ex=self.settings.dedup_window_s))

    def vote(self, answer_id: str, user: str, helpful: bool, comment: str = "") -> bool:
        """Store a 👍/👎 (and what the voter wrote with it); False when the answer is unknown (expired, or forged)."""
        return self.learning.vote(answer_id, user, helpful, comment) is not None

    def remember_link(self, audience: Audience, doc_id: str, url: str) -> None:
        """Where a document was shared, so that answers citing it can link there."""
        self.redis.hset(keys.shared_links(audience.tenant), f"{audience.scope}\0{doc_id}", url)

    def _links(self, tenant: str, sources: list[tuple[str, str]]) -> dict[str, str]:
        """Where each cited (scope, document) was shared, for those that have a link."""
        if not sources:
            return {}
        urls = self.redis.hmget(keys.shared_links(tenant), [f"{scope}\0{doc}" for scope, doc in sources])
        return {doc: url.decode() for (_, doc), url in zip(sources, urls, strict=True) if url}

    async def suggestions(self, audience: Audience, language: str) -> list[Suggestion]:
        """Questions to offer someone starting a conversation here (see `bot.suggestions`)."""
        store = self.core.knowledge.store
        docs = await asyncio.to_thread(store.list_documents, audience.tenant, audience.visible_scopes)
        return await asyncio.to_thread(suggestions, self.learning, docs, audience, language)

    def is_admin(self, user: str) -> bool:
        return user in self.settings.admin_ids

    # --- commands -----------------------------------------------------------------------------------------

    async def command(self, conv: Conversation, text: str) -> str:
        """Run one `/expert` command (`help`, `status`, `docs`, `forget`, `teach`, `retrain`); returns the reply."""
        name, _, arg = text.strip().partition(" ")
        name, arg = name.lower(), arg.strip()
        if name in ("", "help"):
            return HELP
        if name == "status":
            return await asyncio.to_thread(self._status, conv)
        if name == "docs":
            return await asyncio.to_thread(self._docs, conv)
        if name == "teach":
            return await asyncio.to_thread(self._teach, conv, arg)
        if name in ("forget", "retrain") and not self.is_admin(conv.user):
            return f"Only admins can {name}. Ask one of them, or see `help`."
        if name == "forget":
            return await asyncio.to_thread(self._forget, conv, arg)
        if name == "retrain":
            return await asyncio.to_thread(self._retrain, conv)
        return f"I don't know the command '{name}'.\n\n{HELP}"

    def _status(self, conv: Conversation) -> str:
        from workers.client import queue_depths

        store = self.core.knowledge.store
        docs = store.list_documents(conv.audience.tenant, conv.audience.visible_scopes)
        queues = ", ".join(f"{q} {n}" for q, n in queue_depths(self.settings).items())
        current = tenant_registry(self.settings.adapter_registry, conv.audience.tenant).current()
        if current is None:
            adapter = "none yet" + (": the base model answers domain questions" if self._has_domain_model() else "")
        else:
            metrics = current.manifest.get("metrics", {})
            shown = ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items())
            adapter = f"{current.name}" + (f" ({shown})" if shown else "")
        if self.settings.generator == "openai" and self.settings.openai_lora == "runtime":
            from agent.models.lora_fleet import refusals

            for r in refusals(self.settings.adapter_registry, conv.audience.tenant):
                serving = r["serving"] or "the base model"
                adapter += f"\n  {r['server']} refused {r['version']} ({r['reason']}); {serving} answers there"
        return (
            f"Documents here: {len(docs)} ({sum(d.chunks for d in docs)} passages)\n"
            f"Queued jobs: {queues}\n"
            f"Domain model: {self._domain_model()}\n"
            f"Domain adapter: {adapter}"
        )

    def _has_domain_model(self) -> bool:
        """The truth the answers also go by: the chat core has a generator (else it says no domain model is
        configured and quotes the documents)."""
        return self.settings.generator != "extractive"

    def _domain_model(self) -> str:
        if not self._has_domain_model():
            return "none is configured (EXPERTBOT_GENERATOR=extractive), so answers quote the shared documents"
        if self.settings.generator == "openai":
            return f"{self.settings.openai_model} (an OpenAI-compatible server)"
        return f"{self.settings.phi3_model} (in this process)"

    def _docs(self, conv: Conversation) -> str:
        docs = self.core.knowledge.store.list_documents(conv.audience.tenant, conv.audience.visible_scopes)
        if not docs:
            return "No documents here yet: share one with me and it becomes knowledge for this conversation."
        lines = [
            f"• {d.doc_id}: {d.title} ({d.chunks} passages{', tenant-wide' if d.scope == TENANT_WIDE else ''})"
            for d in docs
        ]
        return "Documents visible here:\n" + "\n".join(lines)

    def _teach(self, conv: Conversation, arg: str) -> str:
        try:
            term, definition = parse_teach(arg)
        except ValueError as exc:
            return f"I couldn't read that: {exc}."
        scope = conv.audience.scope if conv.private else TENANT_WIDE
        item = CuratedItem("term", term, definition, conv.audience.tenant, scope, f"{conv.surface}:{conv.user}")
        new = self.learning.add_curated(item)
        where = (
            "It stays in this private conversation and is not used to train the shared adapter."
            if conv.private
            else "The domain adapter learns it at the next retraining."
        )
        return f"{'Learned' if new else 'Updated'} '{term}'. {where}"

    def _forget(self, conv: Conversation, doc_id: str) -> str:
        if not doc_id:
            return "Which document? Write: forget <document> (see `docs` for the names)."
        from agent.forgetting import forget_document

        store, memory = self.core.knowledge.store, self.settings.memory_path
        removed = forget_document(store, self.learning, memory, conv.audience, doc_id).passages
        if not removed:
            return f"There is no document '{doc_id}' shared here (see `docs`)."
        return f"Forgot '{doc_id}' ({removed} passages)."

    def _retrain(self, conv: Conversation) -> str:
        from workers.client import submit_training

        job = submit_training(conv.audience.tenant, force=True)
        return f"Retraining queued (job {job}). The new adapter is used only if it beats the current one."

    # --- shared documents ---------------------------------------------------------------------------------

    def check_upload(self, name: str, size: int) -> str | None:
        """Why a file cannot be taken before downloading it (None when it can)."""
        problem = upload_problem(name, size, self.settings.max_upload_bytes)
        return f"{problem}." if problem else None

    async def share(
        self, conv: Conversation, data: bytes, name: str, *, link: str | None = None, language: str = "en"
    ) -> AsyncIterator[ShareProgress]:
        """Queue a shared file for ingestion with the conversation's audience and follow it to the end.

        Yields progress lines ("Reading handbook.pdf: 40/120 passages") and a last one that is finished, saying
        "ready" or why not, in the sharer's `language` (their chat locale: the file says nothing about it). The
        document id is the file name, so sharing a new version replaces the old one.
        """
        from bot.jobs import describe, reading, succeeded
        from workers.client import follow_jobs, submit_ingest

        problem = self.check_upload(name, len(data))
        if problem is None and not await asyncio.to_thread(self.share_limit.allow, _who(conv)):
            problem = TOO_MANY_SHARES.format(name=name, limit=self.settings.shares_per_hour)
        if problem:
            yield ShareProgress(problem, finished=True, ok=False)
            return
        job = await asyncio.to_thread(submit_ingest, self.settings, conv.audience, data, name, name)
        if link:
            await asyncio.to_thread(self.remember_link, conv.audience, name, link)
        yield ShareProgress(reading(name, "queued", language))
        last, shown_at = "", time.monotonic()
        statuses = follow_jobs([job], poll_s=PROGRESS_POLL_S)
        while (status := await asyncio.to_thread(next, statuses, None)) is not None:
            if status.state == "error":
                log.error("ingestion of %s failed (job %s): %s", name, job, status.error)
            line = describe(status, name, language)
            if status.finished:
                yield ShareProgress(line, True, succeeded(status))
                return
            if line != last and time.monotonic() - shown_at >= PROGRESS_EVERY_S:
                last, shown_at = line, time.monotonic()
                yield ShareProgress(line)


def _who(conv: Conversation) -> str:
    return f"{conv.surface}:{conv.audience.tenant}:{conv.user}"
