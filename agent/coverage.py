"""How well "not covered" is told apart: precision and recall of the extractive reply's not-covered answers on
questions the documents answer (the development set) and questions they do not (`eval/not_covered_dev.jsonl`).

Used to calibrate `agent.extractive.COVERED_FLOOR`; the figures are in the README.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agent.extractive import extract_answer
from agent.knowledge.service import Knowledge
from agent.language import detect_language
from agent.types import Audience, best_similarity

RELEVANCE_FLOOR = 0.18  # agent.chat.RELEVANCE_FLOOR: below it the chat core says "nothing found" first


def read_uncovered(path: Path) -> list[str]:
    return [json.loads(line)["question"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def coverage_report(
    knowledge: Knowledge, audience: Audience, covered: list[str], uncovered: list[str], *, k: int = 6
) -> dict[str, Any]:
    """Precision and recall of "not covered" (either reply: nothing found, or not covered with the closest
    document), with the questions it got wrong."""

    def says_not_covered(question: str) -> bool:
        hits = knowledge.search(audience, question, k=k, one_per_document=False)
        if best_similarity(hits) < RELEVANCE_FLOOR:
            return True
        return not extract_answer(question, hits, knowledge.embeddings, language=detect_language(question)).covered

    false_alarms = [q for q in covered if says_not_covered(q)]
    caught = [q for q in uncovered if says_not_covered(q)]
    flagged = len(false_alarms) + len(caught)
    return {
        "covered_questions": len(covered),
        "uncovered_questions": len(uncovered),
        "precision": round(len(caught) / flagged, 3) if flagged else 1.0,
        "recall": round(len(caught) / max(len(uncovered), 1), 3),
        "false_alarms": false_alarms,
        "missed": [q for q in uncovered if q not in caught],
    }
