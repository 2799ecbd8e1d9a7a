"""What a chat surface hands the assistant and gets back, in platform-neutral terms: where a message came from
(`Conversation`), an answer (`Answer`, or `AnswerEvent`s while it streams), and a shared file's progress."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from agent.types import Audience, ChatReply, Hit, Route

ROUTE_LABELS: dict[str, str] = {"retrieve": "from documents", "domain": "domain expert", "smalltalk": "chat"}


@dataclass(frozen=True)
class Conversation:
    """Where a message came from, in platform-neutral terms."""

    surface: str
    """"slack", "teams", "console"."""
    audience: Audience
    """Tenant (workspace or Teams tenant) and scope (the channel or chat): what documents may be seen here."""
    thread: str
    """The conversation memory key: the Slack thread or Teams conversation."""
    user: str
    private: bool
    """A private channel, DM or group chat: what is taught here stays here."""


@dataclass
class Answer:
    reply: ChatReply
    answer_id: str
    """The id the 👍/👎 buttons carry."""
    links: dict[str, str] = field(default_factory=dict)
    """Document id -> where it was shared, for the sources that have one."""
    streamed: str | None = None
    """The text as it was streamed, when it was (its [n] are the numbers of `numbered`)."""
    numbered: list[tuple[int, Hit]] = field(default_factory=list)
    """The sources with the numbers the streamed text cites them by (empty: 1, 2, ... as in `reply.sources`)."""

    @property
    def route_label(self) -> str:
        return ROUTE_LABELS.get(self.reply.route, self.reply.route)

    @property
    def text(self) -> str:
        """What the person was shown: the streamed text, or the reply's."""
        return self.reply.text if self.streamed is None else self.streamed

    @property
    def sources(self) -> list[tuple[int, Hit]]:
        """(number cited in `text`, passage)."""
        return self.numbered or list(enumerate(self.reply.sources, 1))


@dataclass(frozen=True)
class AnswerEvent:
    """A streamed answer as a surface sees it: "route" (what the bot is doing), "text" chunks, then "done"."""

    kind: Literal["route", "text", "done"]
    text: str = ""
    route: Route | None = None
    answer: Answer | None = None


@dataclass(frozen=True)
class ShareProgress:
    text: str
    finished: bool = False
    ok: bool = True
