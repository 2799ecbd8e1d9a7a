"""Run as a script: the peak-memory growth (MB) of reading one Word file as a worker does, in a fresh process.

Not a test module: `tests/test_security_jobs.py` runs it in a child so that the measurement is of nothing else.
Usage: python tests/memory_probe.py FILE MAX_UPLOAD_BYTES
"""

from __future__ import annotations

import inspect
import io
import json
import sys
from pathlib import Path

import docx

from agent.knowledge.parsers import DocumentError, parse_document


def peak_kb() -> int:
    """This process's peak resident memory (VmHWM). Not `ru_maxrss`: Linux carries that over from the parent
    that started the probe (its size at fork), so under a large test process every growth read 0."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def main() -> None:
    path, limit = Path(sys.argv[1]), int(sys.argv[2])
    # Also runs against code from before the upload-proportional cap (to show the tests fail there).
    options = {"max_upload_bytes": limit} if "max_upload_bytes" in inspect.signature(parse_document).parameters else {}
    warm = io.BytesIO()
    document = docx.Document()
    document.add_paragraph("warm-up")
    document.save(warm)
    parse_document(warm.getvalue(), "warm.docx", **options)  # imports and caches: not the file's cost
    before = peak_kb()
    data = path.read_bytes()  # as the worker loads the blob
    outcome = "read"
    try:
        parse_document(data, path.name, **options)
    except DocumentError as exc:
        outcome = str(exc)
    after = peak_kb()
    print(json.dumps({"growth_mb": (after - before) / 1024, "outcome": outcome}))


if __name__ == "__main__":
    main()
