"""Every Redis key and key prefix expertbot writes, in one place (Celery's own keys are Celery's).

Who writes a key reads it through these functions too, so a rename is one edit and `redis-cli --scan` output can
be read against this list. All keys start with `expertbot:`.
"""

from __future__ import annotations

PREFIX = "expertbot"

# --- files in transit (workers/blobs.py) -------------------------------------------------------------------
BLOB_PREFIX = f"{PREFIX}:blob:"
"""An uploaded file's bytes between the chat surface and the ingest worker: `expertbot:blob:<uuid>`."""


# --- jobs that keep failing (workers/deadletter.py) --------------------------------------------------------
def deliveries(job_id: str, retries: int | str) -> str:
    """How often one attempt of a job has been delivered to a worker (a poison job is dead-lettered after N)."""
    return f"{PREFIX}:deliveries:{job_id}:{retries}"


DEAD_LETTERS = f"{PREFIX}:dead-letters"
"""The newest dead-lettered jobs, for operators."""

# --- what the bot learns from (agent/learning.py) ----------------------------------------------------------
LEARNING_PREFIX = f"{PREFIX}:learning"


def learning(kind: str, *parts: str) -> str:
    """`expertbot:learning:<kind>:...`: curated items, answers, votes, and the tenants' "changed at" stamps."""
    return ":".join((LEARNING_PREFIX, kind, *parts))


# --- the nightly training (workers/training/pipeline.py) ---------------------------------------------------
TRAIN_LOCK = f"{PREFIX}:train:lock"
"""Held (and renewed) by the one training run allowed at a time."""


def train_consumed(tenant: str) -> str:
    """When the tenant's last finished training run read its inputs."""
    return f"{PREFIX}:train:consumed:{tenant}"


# --- the chat surfaces (bot/) -------------------------------------------------------------------------------
def seen_event(surface: str, event_id: str) -> str:
    """Set once per delivered event id, so a retried delivery is answered once."""
    return f"{PREFIX}:seen:{surface}:{event_id}"


def shared_links(tenant: str) -> str:
    """Hash of (scope, document) -> where the document was shared, for the links in answers."""
    return f"{PREFIX}:links:{tenant}"


def slack_thread(team: str, channel: str, thread: str) -> str:
    """A Slack thread the bot takes part in: replies there need no mention."""
    return f"{PREFIX}:slack:thread:{team}:{channel}:{thread}"


def rate(kind: str, who: str, window: int) -> str:
    """Requests of one kind by one user in one rate-limit window (bot/limits.py)."""
    return f"{PREFIX}:rate:{kind}:{who}:{window}"


def slack_assistant_context(team: str, channel: str, thread: str) -> str:
    """The channel a user was viewing when they opened the bot's own chat thread (Slack's assistant context)."""
    return f"{PREFIX}:slack:context:{team}:{channel}:{thread}"


def teams_answer_message(conversation: str, activity_id: str) -> str:
    """A Teams message that carries an answer -> the answer's id, for the feedback Teams sends about that message."""
    return f"{PREFIX}:teams:answer:{conversation}:{activity_id}"
