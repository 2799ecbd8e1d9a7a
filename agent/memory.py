"""Conversation memory that keeps what follow-up questions need and nothing that should have been forgotten.

LangGraph's SQLite checkpointer would keep every step of every turn forever: the passages each search found, the
sources each answer quoted, an ever-growing message list. `ConversationMemory` is that checkpointer with limits:

- passages and sources never reach the file: the cited documents are kept as ids, in an index of their own;
- only each thread's latest checkpoint is kept, with its last `keep_messages` messages;
- a thread that cites a forgotten document is deleted (`forget_document`), as is one untouched for
  `retention_days`;
- deleted rows are overwritten (`secure_delete`) and the write-ahead log is truncated after a purge, so the text
  is gone from the file, not only unreachable.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from langchain_core.messages import AnyMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import ChannelVersions, Checkpoint, CheckpointMetadata
from langgraph.checkpoint.sqlite import SqliteSaver

SCRUBBED_CHANNELS = frozenset({"hits", "sources"})
"""State channels that carry passage text: stored empty."""
SWEEP_EVERY_S = 600.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS expertbot_threads (thread_id TEXT PRIMARY KEY, tenant TEXT, last_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS expertbot_citations (
    thread_id TEXT NOT NULL, tenant TEXT NOT NULL, scope TEXT NOT NULL, doc_id TEXT NOT NULL,
    PRIMARY KEY (thread_id, tenant, scope, doc_id)
);
CREATE INDEX IF NOT EXISTS expertbot_citations_doc ON expertbot_citations (tenant, scope, doc_id);
"""


def connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA secure_delete=ON")  # deleted text is overwritten, not left in free pages
    return conn


class ConversationMemory(SqliteSaver):
    """A SqliteSaver that stores document ids instead of passages, one checkpoint per thread, and forgets."""

    def __init__(self, conn: sqlite3.Connection, *, keep_messages: int = 12, retention_days: float = 30.0) -> None:
        super().__init__(conn)
        self.keep_messages = keep_messages
        self.retention_s = retention_days * 86400
        self._last_sweep = 0.0
        self._sweep_lock = threading.Lock()
        with self.lock:
            conn.executescript(_SCHEMA)
            conn.commit()

    @classmethod
    def open(cls, path: Path, **options: Any) -> ConversationMemory:
        return cls(connect(path), **options)

    # --- what is written ---------------------------------------------------------------------------------------

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        values = dict(checkpoint.get("channel_values", {}))
        thread = str(config["configurable"]["thread_id"])
        tenant = str(values.get("tenant", ""))
        cited = {(str(s.get("scope", "")), str(s.get("doc_id", ""))) for s in values.get("sources") or []}
        for channel in SCRUBBED_CHANNELS & values.keys():
            values[channel] = []
        messages: list[AnyMessage] = list(values.get("messages") or [])
        if len(messages) > self.keep_messages:
            values["messages"] = messages[-self.keep_messages :]
        saved = super().put(config, {**checkpoint, "channel_values": values}, metadata, new_versions)
        latest = checkpoint["id"]
        ns = str(config["configurable"].get("checkpoint_ns", ""))
        with self.cursor() as cur:  # earlier checkpoints of the thread (and their writes) are never read again
            cur.execute(
                "DELETE FROM checkpoints WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id != ?",
                (thread, ns, latest),
            )
            cur.execute(
                "DELETE FROM writes WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id != ?",
                (thread, ns, latest),
            )
            cur.execute(
                "INSERT INTO expertbot_threads VALUES (?, ?, ?) "
                "ON CONFLICT(thread_id) DO UPDATE SET last_at = excluded.last_at",
                (thread, tenant, time.time()),
            )
            cur.executemany(
                "INSERT OR IGNORE INTO expertbot_citations VALUES (?, ?, ?, ?)",
                [(thread, tenant, scope, doc) for scope, doc in cited if doc],
            )
        self._maybe_sweep()
        return saved

    def put_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        scrubbed = [(channel, [] if channel in SCRUBBED_CHANNELS else value) for channel, value in writes]
        super().put_writes(config, scrubbed, task_id, task_path)

    # --- what is forgotten -------------------------------------------------------------------------------------

    def delete_thread(self, thread_id: str) -> None:
        super().delete_thread(thread_id)
        with self.cursor() as cur:
            cur.execute("DELETE FROM expertbot_threads WHERE thread_id = ?", (str(thread_id),))
            cur.execute("DELETE FROM expertbot_citations WHERE thread_id = ?", (str(thread_id),))

    def forget_document(self, tenant: str, scope: str, doc_id: str) -> int:
        """Delete every conversation that cited the document; returns how many."""
        with self.cursor() as cur:
            cur.execute(
                "SELECT DISTINCT thread_id FROM expertbot_citations WHERE tenant = ? AND scope = ? AND doc_id = ?",
                (tenant, scope, doc_id),
            )
            threads = [str(row[0]) for row in cur.fetchall()]
        for thread in threads:
            self.delete_thread(thread)
        self._compact()
        return len(threads)

    def purge_expired(self, now: float | None = None) -> int:
        """Delete the conversations untouched for longer than the retention; returns how many."""
        cutoff = (now or time.time()) - self.retention_s
        with self.cursor() as cur:
            cur.execute("SELECT thread_id FROM expertbot_threads WHERE last_at < ?", (cutoff,))
            threads = [str(row[0]) for row in cur.fetchall()]
        for thread in threads:
            self.delete_thread(thread)
        if threads:
            self._compact()
        return len(threads)

    def _maybe_sweep(self) -> None:
        if time.monotonic() - self._last_sweep < SWEEP_EVERY_S or not self._sweep_lock.acquire(blocking=False):
            return
        try:
            self._last_sweep = time.monotonic()
            self.purge_expired()
        finally:
            self._sweep_lock.release()

    def _compact(self) -> None:
        """Move the write-ahead log into the file and empty it: the deleted text must not survive there."""
        with self.lock:
            self.conn.commit()
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def forget_in_memory(path: Path, tenant: str, scope: str, doc_id: str) -> int:
    """`ConversationMemory.forget_document` on the memory file at `path` (0 when there is none yet)."""
    if not path.exists():
        return 0
    memory = ConversationMemory.open(path)
    try:
        return memory.forget_document(tenant, scope, doc_id)
    finally:
        memory.conn.close()


__all__ = ["ConversationMemory", "connect", "forget_in_memory"]
