"""Curated domain knowledge from a file (CSV or JSONL), as tenant-wide items for the learning store.

Accepted rows (CSV with a header row, or one JSON object a line):
- `term`, `definition`: a word of the domain and what it means;
- `question`, `answer`: a question and its answer;
- `kind` (term, qa or style), `prompt`, `text`: any curated item.
A bad row is reported with its line number and skipped; the good rows are kept.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

from agent.learning import CuratedItem, CuratedKind
from agent.types import TENANT_WIDE

MAX_PROMPT, MAX_TEXT = 200, 4000


@dataclass
class TeachFile:
    items: list[CuratedItem] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _item(row: dict[str, Any], tenant: str, source: str) -> CuratedItem:
    def get(*names: str) -> str:
        for name in names:
            value = row.get(name)
            if isinstance(value, str) and value.strip():
                return value.strip()
        return ""

    kind = get("kind").lower() or ("qa" if get("question") else "term")
    if kind not in get_args(CuratedKind):
        raise ValueError(f"kind must be term, qa or style, not {kind!r}")
    prompt, text = get("prompt", "term", "question"), get("text", "definition", "answer")
    if not prompt or not text:
        raise ValueError("needs term and definition, question and answer, or prompt and text")
    if len(prompt) > MAX_PROMPT or len(text) > MAX_TEXT:
        raise ValueError(f"a term or question may have up to {MAX_PROMPT} characters and a text up to {MAX_TEXT:,}")
    return CuratedItem(kind, prompt, text, tenant, TENANT_WIDE, source)  # type: ignore[arg-type]


def read_teach_file(data: bytes, name: str, tenant: str) -> TeachFile:
    """Parse a CSV or JSONL file (chosen by its name, .jsonl/.json or anything else as CSV)."""
    out = TeachFile()
    source = f"file:{Path(name).name}"
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        out.problems.append(f"{name} is not UTF-8 text")
        return out
    rows: list[tuple[int, Any]] = []
    if name.lower().endswith((".jsonl", ".json", ".ndjson")):
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append((number, json.loads(line)))
            except ValueError:
                out.problems.append(f"line {number}: not a JSON object")
    else:
        reader = csv.DictReader(io.StringIO(text))
        rows = [(number, row) for number, row in enumerate(reader, 2)]
        if not reader.fieldnames:
            out.problems.append(f"{name} is empty or has no header row (e.g. term,definition)")
    for number, row in rows:
        if not isinstance(row, dict):
            out.problems.append(f"line {number}: not an object")
            continue
        try:
            out.items.append(_item(row, tenant, source))
        except ValueError as exc:
            out.problems.append(f"line {number}: {exc}")
    return out
