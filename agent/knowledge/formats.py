"""What a person may share and how large: the one list of readable formats and the one wording of "too large".

Every surface (chat, downloads, the CLI) and the ingest worker check uploads and word refusals through here, so a
person reads the same sentence wherever a file is refused.
"""

from __future__ import annotations

FORMATS = "PDF, Word (.docx), HTML, Markdown and text"
"""The formats the parsers read, as shown to people."""

READABLE = f"I can read {FORMATS} files."

_MB = 1024 * 1024


def oversize_reason(name: str, max_bytes: int, size: int | None = None) -> str:
    """`name` is too large; `size` when it is known (a download may stop before its end)."""
    known = f" is {size / _MB:.1f} MB," if size is not None else " is"
    return f"{name}{known} over the {max_bytes / _MB:g} MB limit"


def upload_problem(name: str, size: int, max_bytes: int) -> str | None:
    """Why a file of `size` bytes cannot be taken, before anything reads it (None when it can)."""
    if size <= 0:
        return f"{name} is empty"
    return oversize_reason(name, max_bytes, size) if size > max_bytes else None
