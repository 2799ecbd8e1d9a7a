"""`expertbot slack --local`: a person tries the Slack app from the terminal, with no Slack workspace."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_slack_local_answers_what_is_typed_through_the_slack_app(worker) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLACK_")}  # no Slack credentials at all
    proc = subprocess.run(
        [sys.executable, "-m", "bot.cli", "slack", "--local"],
        input="hi there!\nWhich port does the Zorblax gateway listen on?\n/new\n/help\n/quit\n",
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "signing secret 'local-signing-secret'" in out and "/slack/events" in out
    replies = [line for line in out.splitlines() if "bot> " in line]
    # small talk, then a documents answer (nothing shared here), each streamed into the thread by the app, with
    # the route that chat.stopStream adds under the text
    assert len(replies) >= 2, out
    assert "I found nothing about that in the documents shared here" in out
    assert "*chat* · confidence" in out and "*from documents* · confidence" in out
    assert "new thread" in out
