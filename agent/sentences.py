"""Sentence splitting for every script we serve, shared by chunking (never cut mid-sentence) and by the
extractive answer (quote whole sentences only).

Ends: ". ! ?" before a space, the CJK full stops "。！？" anywhere, the Devanagari danda "।" and "॥", the
Arabic "؟" and the ellipsis. A line of its own (a list item, a table row) is a unit even without an end mark.
"""

from __future__ import annotations

import re

_END = re.compile(
    r"(?<=[.!?…])(?<!\b[A-Z]\.)(?<!\be\.g\.)(?<!\bi\.e\.)(?<!\betc\.)(?<!\bvs\.)(?<!\bNo\.)\s+(?=\S)"
    r"|(?<=[。！？])\s*|(?<=[।॥؟])\s*"
)
_LIST_MARK = re.compile(r"^\s*(?:[-*+•]|\d{1,3}[.)])\s+")
_ADMONITION = re.compile(r"^\s*\[!(?:NOTE|TIP|IMPORTANT|WARNING|CAUTION)\]\s*", re.IGNORECASE)
MIN_CHARS = 8


def split_sentences(text: str) -> list[str]:
    """Split a paragraph (or a passage) into sentences; each line of the text starts a new unit."""
    out: list[str] = []
    for line in text.splitlines():
        line = " ".join(line.split())
        if not line:
            continue
        out.extend(s.strip() for s in _END.split(line) if s and s.strip())
    return out


def quotable_units(text: str) -> list[str]:
    """The units of a passage worth quoting: whole sentences and list items, without list marks or table pipes,
    and without fragments too short to say anything."""
    units = []
    for sentence in split_sentences(text):
        unit = _ADMONITION.sub("", _LIST_MARK.sub("", sentence)).strip(" |#*>")
        unit = re.sub(r"\s*\|\s*", " | ", unit)
        if len(unit) >= MIN_CHARS:
            units.append(unit)
    return units


def looks_like_heading(unit: str) -> bool:
    """A short line with no end mark and no figure: a heading or a label, context rather than an answer."""
    if unit.endswith((".", "!", "?", ":", "。", "！", "？", "।", "॥", "：")) or re.search(r"\d", unit):
        return False
    return len(unit.split()) <= 6 and len(unit) <= 60


_CODE = re.compile(
    r"^(?:import|from|pip3?|python3?|def|class|return|print|sudo|cd|git|npm|conda|export|\$|#include)\b"
    r"|^(?:dotnet|docker|az|curl|wget|huggingface-cli|olive)\s|^[\w.\-\[\]'\"]+\s*[+\-*/]?=\s*\S|[({\[,;]$|^[)}\]]|\w\(\S*\)$"
    r"|^(?!.*[.!?]$)(?:.*\s--?[A-Za-z][\w-]*){2}"  # a command with options: `tool run --model x --task y`
)


def looks_like_code(unit: str) -> bool:
    """A line of code (an assignment, an import, a command, a call split over lines): context, not prose."""
    return bool(_CODE.search(unit))
