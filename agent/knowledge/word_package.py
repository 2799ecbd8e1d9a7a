"""The checks a Word file passes before python-docx inflates any part of it: a zip bomb, or more XML than the
upload limit allows, is refused from the archive's directory alone; what passes is reduced to its XML parts.

Why the XML cap follows the upload limit: python-docx's tree takes about 14 times its XML (measured), so with
XML_SHARE_OF_UPLOAD of the limit a file at the limit costs at most the limit again while it is read. With the file
itself, a worker's peak memory grows by at most twice the upload limit (tests/test_security_jobs.py measures it).
"""

from __future__ import annotations

import io
import zipfile

MAX_UNPACKED_BYTES = 200 * 1024 * 1024
"""A Word file that unpacks to more than this is refused before python-docx inflates it."""
MAX_COMPRESSION_RATIO = 100
"""Real documents compress far less than this; zip bombs compress far more."""
RATIO_CHECK_FROM = 1024 * 1024
"""Tiny members can reach high ratios harmlessly (padding, blank XML)."""
XML_SHARE_OF_UPLOAD = 1 / 16
"""A Word file's XML parts may unpack to at most this share of the upload limit."""


class UnsafePackage(ValueError):
    """The archive was not opened; the message says why, for the person who shared it."""


def max_xml_bytes(max_upload_bytes: int | None) -> int:
    return int(max_upload_bytes * XML_SHARE_OF_UPLOAD) if max_upload_bytes else MAX_UNPACKED_BYTES


def _is_xml_part(member: zipfile.ZipInfo) -> bool:
    return member.filename.lower().endswith((".xml", ".rels"))


def safe_word_package(data: bytes, name: str, max_xml: int) -> bytes:
    """The package with its XML parts only, stored: other parts (images) are left empty, as text needs none of
    them and python-docx would load them all into memory."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        members = archive.infolist()
    unpacked = sum(m.file_size for m in members)
    xml = sum(m.file_size for m in members if _is_xml_part(m))
    ratio = max((m.file_size / max(m.compress_size, 1) for m in members if m.file_size > RATIO_CHECK_FROM),
                default=0.0)  # fmt: skip
    if unpacked > MAX_UNPACKED_BYTES or ratio > MAX_COMPRESSION_RATIO:
        raise UnsafePackage(
            f"{name} unpacks to far more data than a Word document should (a possible zip bomb), so it was not opened"
        )
    if xml > max_xml:
        raise UnsafePackage(
            f"{name} holds {xml / 1024 / 1024:.1f} MB of text markup, more than the {max_xml / 1024 / 1024:.1f} MB "
            "allowed for this upload limit (split it, or raise EXPERTBOT_MAX_UPLOAD_MB), so it was not opened"
        )
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as target:
        for member in source.infolist():
            target.writestr(member.filename, source.read(member) if _is_xml_part(member) else b"")
    return out.getvalue()
