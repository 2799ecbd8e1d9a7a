"""Measure a router on labelled chat messages: accuracy, per-route precision/recall, confusion, the mistakes.

The data is JSON lines with at least `text` and `route` (`retrieve`, `domain` or `smalltalk`); an optional
`retrieval_score` per line is passed to the router, so a run can include the search signal.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from agent.routing import ROUTES, RouteDecision


class Router(Protocol):
    def decide(self, text: str, retrieval_score: float | None = None) -> RouteDecision: ...


def read_routing_data(path: str | Path) -> list[dict[str, Any]]:
    """One JSON object a line; a bad line fails with its number, so a typo in a data file is found at once."""
    path = Path(path)
    rows: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{number}: expected a JSON object")
            if not isinstance(row.get("text"), str):
                raise ValueError(f"{path}:{number}: missing string field 'text'")
            if row.get("route") not in ROUTES:
                raise ValueError(f"{path}:{number}: 'route' must be one of {list(ROUTES)}, got {row.get('route')!r}")
            score = row.get("retrieval_score")
            if score is not None and (isinstance(score, bool) or not isinstance(score, int | float)):
                raise ValueError(f"{path}:{number}: 'retrieval_score' must be a number")
            rows.append(row)
    return rows


def evaluate_routing(router: Router, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Route every row and compare with its label. `ms_per_message` is the mean time of one `decide` call
    (build the router before, so the model load is not counted)."""
    if not rows:
        raise ValueError("no labelled messages to evaluate")
    confusion: dict[str, dict[str, int]] = {g: dict.fromkeys(ROUTES, 0) for g in ROUTES}
    errors: list[dict[str, Any]] = []
    elapsed = 0.0
    for row in rows:
        gold = row["route"]
        started = time.perf_counter()
        decision = router.decide(row["text"], row.get("retrieval_score"))
        elapsed += time.perf_counter() - started
        confusion[gold][decision.route] += 1
        if decision.route != gold:
            item = {"text": row["text"], "gold": gold, "predicted": decision.route, "why": decision.why}
            if "id" in row:
                item = {"id": row["id"], **item}
            errors.append(item)

    per_route: dict[str, dict[str, float]] = {}
    for route in ROUTES:
        correct = confusion[route][route]
        predicted = sum(confusion[g][route] for g in ROUTES)
        support = sum(confusion[route].values())
        per_route[route] = {
            "precision": round(correct / predicted, 4) if predicted else 0.0,
            "recall": round(correct / support, 4) if support else 0.0,
            "support": support,
        }
    correct_total = sum(confusion[r][r] for r in ROUTES)
    return {
        "n": len(rows),
        "accuracy": round(correct_total / len(rows), 4),
        "per_route": per_route,
        "confusion": confusion,
        "errors": errors,
        "ms_per_message": round(1000 * elapsed / len(rows), 2),
    }
