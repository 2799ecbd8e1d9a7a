"""The checks a Word file passes before any part of it is inflated: a zip bomb is refused from the archive's
directory alone. What passes is read as a stream (`docx_stream`), which holds one paragraph or table row of
XML at a time; `WordLimits` bounds that block, the XML in all, and the text, each from the upload limit.

Why from the upload limit: a worker's peak memory then grows by at most about twice the upload limit while it
reads one (the file, its text, one block's tree; tests/test_security_jobs.py measures it), and parsing costs
less time than embedding a plain-text file at the limit would.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass

MAX_UNPACKED_BYTES = 200 * 1024 * 1024
"""A Word file that unpacks to more than this is refused before anything is inflated."""
MAX_COMPRESSION_RATIO = 100
"""Real documents compress far less than this; zip bombs compress far more."""
RATIO_CHECK_FROM = 1024 * 1024
"""Tiny members can reach high ratios harmlessly (padding, blank XML)."""


class UnsafePackage(ValueError):
    """The archive was not opened; the message says why, for the person who shared it."""


@dataclass(frozen=True)
class WordLimits:
    """What reading one Word file may cost, from the upload limit (see the module's docstring)."""

    text_chars: int
    """A quarter of the upload limit (6.25 MB of text at 25 MB, some 3,000 pages): the text is held about twice
    while its sections are put together, next to the file itself."""
    markup_bytes: int
    """XML inflated in all: bounds the time spent parsing (about 1 s per 10 MB measured; a text file at the
    limit costs more to embed)."""
    block_bytes: int
    """XML of one paragraph or table row (with anything between two of them): bounds the tree held at once
    (about 14 times its XML), so memory stays under the upload limit."""

    @classmethod
    def for_upload(cls, max_upload_bytes: int | None) -> WordLimits:
        limit = max_upload_bytes or MAX_UNPACKED_BYTES
        return cls(text_chars=limit // 4, markup_bytes=4 * limit, block_bytes=limit // 16)


def check_word_package(archive: zipfile.ZipFile, name: str) -> None:
    """Raise UnsafePackage for an archive that unpacks to far more than a Word document should."""
    members = archive.infolist()
    unpacked = sum(m.file_size for m in members)
    ratio = max((m.file_size / max(m.compress_size, 1) for m in members if m.file_size > RATIO_CHECK_FROM),
                default=0.0)  # fmt: skip
    if unpacked > MAX_UNPACKED_BYTES or ratio > MAX_COMPRESSION_RATIO:
        raise UnsafePackage(
            f"{name} unpacks to far more data than a Word document should (a possible zip bomb), so it was not opened"
        )
