"""Messages sent outside the turn that caused them, through a stored conversation reference.

Teams gives a bot about 15 seconds to answer a request, and an answer or an ingestion can take longer, so the
turn only acknowledges (typing) and the work replies later through `CloudAdapter.continue_conversation`.
Background tasks are tracked so that shutdown can wait for them and tests can tell when all work is done.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from botbuilder.core import TurnContext
from botbuilder.integration.aiohttp import CloudAdapter
from botbuilder.schema import Activity, ConversationReference

log = logging.getLogger(__name__)


SEND_SLOTS = 4
"""Proactive sends in flight at once. Each costs a few ms of CPU in botbuilder's msrest clients; under a burst,
bounding them keeps the event loop free to acknowledge new requests (what Teams times), while replies queue."""


class Messenger:
    """Sends and updates activities in a conversation later on; one per endpoint."""

    def __init__(self, adapter: CloudAdapter, app_id: str) -> None:
        self.adapter = adapter
        self.app_id = app_id
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(SEND_SLOTS)

    async def send(self, reference: ConversationReference, activity: Activity) -> str:
        """Post `activity` into the conversation (as a reply to the message that started the work); its id.

        Raises what the connector answered when it refused the activity (botbuilder would otherwise hand the error
        to the adapter's turn-error handler and return as if it had been sent: a refused stream update must be
        known to be refused)."""
        sent: list[str] = []
        failed: list[Exception] = []

        async def logic(context: TurnContext) -> None:
            # botbuilder gives the continuation turn a random id, which would become the reply's replyToId.
            context.activity.id = reference.activity_id
            try:
                response = await context.send_activity(activity)
            except Exception as exc:
                failed.append(exc)
                return
            sent.append(response.id if response and response.id else "")

        async with self._slots:
            await self.adapter.continue_conversation(reference, logic, self.app_id)
        if failed:
            raise failed[0]
        return sent[0] if sent else ""

    async def update(self, reference: ConversationReference, activity_id: str, activity: Activity) -> None:
        """Replace a message the bot sent earlier (progress lines), so that a chat is not flooded."""
        activity.id = activity_id
        failed: list[Exception] = []

        async def logic(context: TurnContext) -> None:
            try:
                await context.update_activity(activity)
            except Exception as exc:
                failed.append(exc)

        async with self._slots:
            await self.adapter.continue_conversation(reference, logic, self.app_id)
        if failed:
            raise failed[0]

    def spawn(self, work: Coroutine[Any, Any, None], what: str) -> None:
        """Run `work` after the turn has answered; a failure is logged (the work itself tells the user)."""
        task = asyncio.get_running_loop().create_task(work, name=what)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background work %s failed", task.get_name(), exc_info=task.exception())

    @property
    def busy(self) -> int:
        return len(self._tasks)

    async def drain(self, timeout_s: float = 30.0) -> None:
        """Wait for the background work (at shutdown), cancelling what is still running after `timeout_s`."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=timeout_s)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
