"""Would a person accept this reply? The criteria of `expertbot eval answers` (issue 15), as plain functions.

A reply is **accepted** when (a) one of the question's answer keys appears in the first 400 characters of its
body, (b) at least 60% of the body's letters are in the asker's script (for Latin-script languages the
language identifier must also agree), unless the question is cross-lingual, and (c) the body is at most 700
characters. The body is the reply's text exactly as a chat surface shows it, without the sources list.
"""

from __future__ import annotations

import re
import statistics
import unicodedata
from dataclasses import asdict, dataclass
from typing import Any

from agent.language import detect_language

KEY_WINDOW = 400
MAX_BODY_CHARS = 700
LANGUAGE_SHARE = 0.6

_SCRIPTS: dict[str, re.Pattern[str]] = {
    "latin": re.compile(r"[A-Za-z\u00c0-\u024f\u1e00-\u1eff]"),
    "han": re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]"),
    "kana": re.compile(r"[\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9f]"),
    "hangul": re.compile(r"[\u1100-\u11ff\u3130-\u318f\uac00-\ud7af]"),
    "devanagari": re.compile(r"[\u0900-\u097f]"),
    "cyrillic": re.compile(r"[\u0400-\u04ff]"),
}
LANGUAGE_SCRIPTS: dict[str, tuple[str, ...]] = {
    "en": ("latin",), "es": ("latin",), "fr": ("latin",), "lt": ("latin",), "tl": ("latin",),
    "zh": ("han",), "zh-tw": ("han",), "ja": ("han", "kana"), "ko": ("hangul", "han"),
    "ne": ("devanagari",), "mn": ("cyrillic",),
}  # fmt: skip


@dataclass(frozen=True)
class Verdict:
    key_anywhere: bool
    key_early: bool
    language: bool
    short: bool
    chars: int

    @property
    def accepted(self) -> bool:
        return self.key_early and self.language and self.short


def _letters(text: str) -> list[str]:
    """Letters and combining marks (Devanagari vowel signs are marks, not letters, but are part of words)."""
    return [c for c in text if unicodedata.category(c)[0] in "LM"]


def script_share(text: str, language: str) -> float:
    """Share of the text's letters written in the script(s) of `language` (1.0 for a language we do not know)."""
    scripts = LANGUAGE_SCRIPTS.get(language)
    letters = _letters(text)
    if not scripts or not letters:
        return 1.0 if not scripts else 0.0
    own = sum(1 for c in letters if any(_SCRIPTS[s].match(c) for s in scripts))
    return own / len(letters)


def in_language(text: str, language: str) -> bool:
    """Criterion (b): the body is mostly in the asker's script, and for Latin scripts identified as its language."""
    if script_share(text, language) < LANGUAGE_SHARE:
        return False
    if LANGUAGE_SCRIPTS.get(language) == ("latin",):
        return detect_language(text) == language
    return True


def judge(body: str, language: str, answer_keys: tuple[str, ...], kind: str = "") -> Verdict:
    folded, early = body.casefold(), body[:KEY_WINDOW].casefold()
    keys = [k.casefold() for k in answer_keys]
    return Verdict(
        key_anywhere=any(k in folded for k in keys),
        key_early=any(k in early for k in keys),
        language=kind == "cross-lingual" or in_language(body, language),
        short=len(body) <= MAX_BODY_CHARS,
        chars=len(body),
    )


def summarize(verdicts: list[Verdict]) -> dict[str, Any]:
    """accepted_rate, the share meeting each criterion, and the median body length."""
    total = max(len(verdicts), 1)

    def share(name: str) -> float:
        return round(sum(1 for v in verdicts if getattr(v, name)) / total, 3)

    return {
        "accepted_rate": share("accepted"),
        "key_anywhere_rate": share("key_anywhere"),
        "key_in_first_400_rate": share("key_early"),
        "language_rate": share("language"),
        "under_700_rate": share("short"),
        "median_chars": int(statistics.median([v.chars for v in verdicts])) if verdicts else 0,
    }


def verdict_dict(verdict: Verdict) -> dict[str, Any]:
    return {**asdict(verdict), "accepted": verdict.accepted}
