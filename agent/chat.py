"""The chat core: `ChatCore.answer(request) -> reply`, the one entry point every surface (console, CLI, Slack,
Teams) calls.

A small LangGraph graph: `understand` (forced route, language, search, route decision) then one of `retrieve`,
`domain` or `smalltalk`. Each thread's conversation is kept by a LangGraph checkpointer (`agent.memory`: SQLite,
document ids instead of passages, trimmed, purged on forget and after a retention), so follow-up questions see
what came before. The thread key includes tenant and scope, so memory can
never carry one conversation's documents into another.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any, Literal, TypedDict, cast

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, AnyMessage, BaseMessage, HumanMessage, SystemMessage
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages

from agent.answering import (
    check_citations,
    domain_system_prompt,
    retrieval_system_prompt,
    sources_block,
)
from agent.extractive import TWIN_SEARCH_K, extractive_reply
from agent.knowledge.embeddings import one_encoding_per_text
from agent.knowledge.service import Knowledge
from agent.language import detect_language, phrase
from agent.routing import SemanticRouter, parse_forced_route
from agent.settings import Settings
from agent.types import Audience, ChatReply, ChatRequest, Hit, Route, best_similarity

log = logging.getLogger(__name__)

MAX_QUESTION_CHARS = 4000
RELEVANCE_FLOOR = 0.18
"""Below this cosine similarity between question and best passage, the documents do not hold the answer."""
FOLLOW_UP_CHARS = 60
FOLLOW_UP_CONFIDENCE = 0.5
"""An unsure route for a short follow-up ("and on Linux?") yields to the route of the question it follows."""
HISTORY_MESSAGES = 6


class ChatState(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    question: str
    tenant: str
    scope: str
    also: list[str]
    forced: Route | None
    language: str
    route: Route
    confidence: float
    why: str
    hits: list[dict[str, Any]]
    answer: str
    sources: list[dict[str, Any]]
    cited: list[int]
    timings: dict[str, float]


@dataclass(frozen=True)
class StreamEvent:
    """One step of a streamed answer: "route" (route, confidence, why), then "text" chunks, then "sources"
    (numbered as the streamed text cites them), then "done" with the whole reply (text as `answer()` gives it)."""

    kind: Literal["route", "text", "sources", "done"]
    text: str = ""
    route: Route | None = None
    confidence: float = 0.0
    why: str = ""
    sources: list[tuple[int, Hit]] = field(default_factory=list)
    reply: ChatReply | None = None


def _ms(since: float) -> float:
    return round(1000 * (time.perf_counter() - since), 1)


def _relevant(hits: list[Hit]) -> bool:
    return best_similarity(hits) >= RELEVANCE_FLOOR


def _renumber(text: str, cited: list[int]) -> str:
    """Rewrite [n] citations so that they number the listed sources 1, 2, ... in order."""
    mapping = {old: new for new, old in enumerate(cited, 1)}
    for old, new in sorted(mapping.items()):
        text = text.replace(f"[{old}]", f"[\x00{new}]")
    return text.replace("\x00", "")


class ChatCore:
    def __init__(
        self,
        knowledge: Knowledge,
        *,
        llm: BaseChatModel | None = None,
        router: SemanticRouter | None = None,
        checkpointer: BaseCheckpointSaver[Any] | None = None,
        k: int = 6,
    ) -> None:
        self.knowledge = knowledge
        self.llm = llm
        self.router = router or SemanticRouter(knowledge.embeddings)
        self.k = k
        graph = StateGraph(ChatState)
        graph.add_node("understand", self._understand)
        graph.add_node("retrieve", self._retrieve)
        graph.add_node("domain", self._domain)
        graph.add_node("smalltalk", self._smalltalk)
        graph.add_edge(START, "understand")
        graph.add_conditional_edges("understand", lambda s: s["route"], ["retrieve", "domain", "smalltalk"])
        for node in ("retrieve", "domain", "smalltalk"):
            graph.add_edge(node, END)
        self.graph = graph.compile(checkpointer=checkpointer or InMemorySaver())

    def answer(self, request: ChatRequest) -> ChatReply:
        """Answer one message; the reply says which route answered, how sure the router was, and why."""
        started = time.perf_counter()
        text = request.text.strip()
        if not text:
            return ChatReply(phrase("smalltalk", "en"), "smalltalk", 1.0, "empty message")
        key = self._thread_key(request)
        state = self._initial_state(request, text)
        with one_encoding_per_text():
            out = self.graph.invoke(state, {"configurable": {"thread_id": key}})
        return self._reply(out, started, shortened=len(text) > MAX_QUESTION_CHARS)

    def stream(self, request: ChatRequest) -> Iterator[StreamEvent]:
        """The same answer as `answer()`, as it is produced, through LangGraph's and LangChain's streaming: the
        route first, then the generator's tokens (the extractive answer, or any answer not generated token by
        token, comes as one chunk), then the sources, then the whole reply."""
        started = time.perf_counter()
        text = request.text.strip()
        if not text:
            reply = ChatReply(phrase("smalltalk", "en"), "smalltalk", 1.0, "empty message")
            yield StreamEvent("route", route="smalltalk", confidence=1.0, why=reply.why)
            yield from (StreamEvent("text", text=reply.text), StreamEvent("sources"), StreamEvent("done", reply=reply))
            return
        config: Any = {"configurable": {"thread_id": self._thread_key(request)}}
        state = self._initial_state(request, text)
        streamed, out = False, dict[str, Any]()
        with one_encoding_per_text():  # the graph is iterated in one thread: one context throughout
            for mode, data in self.graph.stream(state, config, stream_mode=["updates", "messages", "values"]):
                data = cast(Any, data)
                if mode == "values":  # the whole state as it is now: the checkpoint keeps no passages (agent/memory.py)
                    out = dict(data)
                    continue
                if mode == "messages":
                    chunk, meta = data
                    if isinstance(chunk, AIMessageChunk) and meta.get("langgraph_node") != "understand" and chunk.text:
                        streamed = True
                        yield StreamEvent("text", text=chunk.text)
                    continue
                for node, update in data.items():
                    if node == "understand":
                        yield StreamEvent(
                            "route",
                            route=update["route"],
                            confidence=round(float(update["confidence"]), 3),
                            why=update["why"],
                        )
                    elif not streamed and update and update.get("answer"):
                        yield StreamEvent("text", text=update["answer"])
        reply = self._reply(out, started, shortened=len(text) > MAX_QUESTION_CHARS)
        cited: list[int] = list(out.get("cited") or []) if streamed else []
        numbers = cited or list(range(1, len(reply.sources) + 1))
        yield StreamEvent("sources", sources=list(zip(numbers, reply.sources, strict=False)))
        yield StreamEvent("done", reply=reply)

    @staticmethod
    def _thread_key(request: ChatRequest) -> str:
        return "\x1f".join((request.audience.tenant, request.audience.scope, request.thread))

    @staticmethod
    def _initial_state(request: ChatRequest, text: str) -> ChatState:
        return {
            "question": text[:MAX_QUESTION_CHARS],
            "tenant": request.audience.tenant,
            "scope": request.audience.scope,
            "also": list(request.audience.also),
            "forced": request.forced_route,
        }

    @staticmethod
    def _reply(out: dict[str, Any], started: float, *, shortened: bool) -> ChatReply:
        timings = dict(out.get("timings", {}))
        timings["total"] = _ms(started)
        return ChatReply(
            text=out["answer"],
            route=out["route"],
            confidence=round(float(out["confidence"]), 3),
            why=out["why"] + (" (message shortened)" if shortened else ""),
            sources=[Hit(**h) for h in out.get("sources", [])],
            timings_ms=timings,
        )

    # --- graph nodes -----------------------------------------------------------------------------------------
    def _understand(self, state: ChatState) -> dict[str, Any]:
        started = time.perf_counter()
        forced, text = parse_forced_route(state["question"])
        forced = state.get("forced") or forced
        language = detect_language(text)
        audience = Audience(state["tenant"], state["scope"], tuple(state.get("also") or ()))
        previous = [m.content for m in state.get("messages", []) if isinstance(m, HumanMessage)]
        query, follow_up = text, False
        if previous and len(text) < FOLLOW_UP_CHARS and forced != "smalltalk":
            query, follow_up = f"{previous[-1]} {text}", True  # "and on Linux?" needs its antecedent
        hits = (
            self.knowledge.search(audience, query, k=self.k, one_per_document=False)
            if text and forced != "smalltalk"
            else []
        )
        search_ms = _ms(started)
        relevance = best_similarity(hits)
        if forced:
            route, confidence, why = forced, 1.0, f"route forced to {forced}"
        else:
            decision = self.router.decide(text, retrieval_score=relevance)
            route, confidence, why = decision.route, decision.confidence, "semantic router"
            log.debug("route %s (%.2f): %s", route, confidence, decision.why)  # nearest examples: --verbose only
            if route == "domain" and self.llm is None:  # nothing can answer as the domain expert: the documents do
                route, why = "retrieve", phrase("route_docs_no_model", language)
            previous_route = state.get("route")
            if follow_up and previous_route and previous_route != route and confidence < FOLLOW_UP_CONFIDENCE:
                route, why = previous_route, f"short follow-up kept the previous route ({why})"
        if follow_up and route == "retrieve":
            why += "; follow-up: searched together with the previous question"
        return {
            "question": text,
            "language": language,
            "route": route,
            "confidence": confidence,
            "why": why,
            "hits": [asdict(h) for h in hits],
            "sources": [],
            "timings": {"search": search_ms, "understand": _ms(started)},
        }

    def _retrieve(self, state: ChatState) -> dict[str, Any]:
        started = time.perf_counter()
        hits = [Hit(**h) for h in state["hits"]]
        question, language = state["question"], state["language"]
        if not _relevant(hits):
            return self._finish(state, phrase("nothing_found", language), [], started)
        if self.llm is None:
            extract = extractive_reply(question, language, hits, self.knowledge.embeddings, self._twin_search(state))
            return self._finish(state, extract.text, extract.sources, started)
        prompt = [SystemMessage(retrieval_system_prompt(language) + "\n\n" + sources_block(hits))]
        reply = self._ask(state, [*prompt, *self._history(state), HumanMessage(question)])
        text, cited = check_citations(str(reply.content).strip(), len(hits), question=question)
        return {**self._finish(state, _renumber(text, cited), [hits[n - 1] for n in cited], started), "cited": cited}

    def _domain(self, state: ChatState) -> dict[str, Any]:
        started = time.perf_counter()
        if self.llm is None:  # forced by "expert:": the documents answer; the disclaimer is for when they have nothing
            hits = [Hit(**h) for h in state["hits"]]
            if not _relevant(hits):
                return self._finish(state, phrase("no_domain_model", state["language"]), [], started)
            extract = extractive_reply(
                state["question"], state["language"], hits, self.knowledge.embeddings, self._twin_search(state)
            )
            if not extract.covered:
                return self._finish(state, phrase("no_domain_model", state["language"]), [], started)
            return self._finish(state, extract.text, extract.sources, started)
        messages = [SystemMessage(domain_system_prompt(state["language"])), *self._history(state)]
        reply = self._ask(state, [*messages, HumanMessage(state["question"])])
        return self._finish(state, str(reply.content).strip(), [], started)

    def _smalltalk(self, state: ChatState) -> dict[str, Any]:
        return self._finish(state, phrase("smalltalk", state["language"]), [], time.perf_counter())

    # --- helpers ---------------------------------------------------------------------------------------------
    def _twin_search(self, state: ChatState) -> Callable[[str], list[Hit]]:
        """A dense search of what this conversation may see, for translations of a passage (agent.extractive)."""
        audience = Audience(state["tenant"], state["scope"], tuple(state.get("also") or ()))
        return lambda text: self.knowledge.search(audience, text, k=TWIN_SEARCH_K, mode="dense", one_per_document=False)

    def _ask(self, state: ChatState, messages: list[BaseMessage]) -> BaseMessage:
        """Every generator call goes through here, so each one is made for the conversation's tenant: a model that
        serves per-tenant adapters (Phi3Chat) must never answer with another tenant's. Servers that ignore the
        tenant (the OpenAI backend) are not sent it."""
        assert self.llm is not None
        if getattr(self.llm, "serves_tenants", False):
            return self.llm.invoke(messages, tenant=state["tenant"])
        return self.llm.invoke(messages)

    @staticmethod
    def _history(state: ChatState) -> list[BaseMessage]:
        history: list[BaseMessage] = [*state.get("messages", [])]
        return history[-HISTORY_MESSAGES:]

    @staticmethod
    def _finish(state: ChatState, answer: str, sources: list[Hit], started: float) -> dict[str, Any]:
        timings = {**state.get("timings", {}), "answer": _ms(started)}
        return {
            "answer": answer,
            "sources": [asdict(h) for h in sources],
            "cited": [],
            "timings": timings,
            "messages": [HumanMessage(state["question"]), AIMessage(answer)],
        }


def make_chat_core(settings: Settings, *, knowledge: Knowledge | None = None) -> ChatCore:
    """The chat core as configured: generator from settings, memory in SQLite under the data folder."""
    from agent.knowledge.embeddings import use_threads
    from agent.knowledge.service import open_knowledge
    from agent.memory import ConversationMemory
    from agent.models.factory import make_chat_model

    # Answers run side by side (threads, answer processes), each encoding a few short texts: one BLAS thread
    # each. Split over the cores, such small products only add spinning threads, and with the cores busy an
    # encoding of 2 ms took up to 0.6 s (50 simulated users: p99 4.3 s with a thread per core, 0.12 s with one).
    use_threads(settings.embed_threads or 1)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    memory = ConversationMemory.open(
        settings.memory_path, keep_messages=settings.memory_messages, retention_days=settings.memory_retention_days
    )
    return ChatCore(knowledge or open_knowledge(settings), llm=make_chat_model(settings), checkpointer=memory)
