"""The child process of the suite: `python -m bot.bench.reliability.runner --profile quick NAME...`.

It builds the harness first (before any settings are read), runs each scenario, and appends one result line per
scenario to the `--results` file; progress goes to stderr. A scenario that raises is a failed row, not a crashed suite.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import json
import logging
import signal
import sys
import time
import traceback
from typing import Any

from bot.bench.reliability.harness import Harness
from bot.bench.reliability.registry import Scenario, scenario


def run_one(h: Harness, s: Scenario, profile: str) -> dict[str, Any]:
    module_name, func_name = s.target.split(":", 1)
    func = getattr(importlib.import_module(module_name), func_name)
    kwargs = s.sizes.get(profile, {})
    started = time.monotonic()
    try:
        result = func(**kwargs) if s.hook else func(h, **kwargs)
        if inspect.isawaitable(result):
            result = asyncio.run(result)  # type: ignore[arg-type]
        row: dict[str, Any] = dict(result)
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        row = {"ok": False, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    row.setdefault("seconds", round(time.monotonic() - started, 1))
    row["ok"] = bool(row.get("ok"))
    return {**row, "name": s.name}  # the registry's name, whatever the scenario calls itself


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bot.bench.reliability.runner")
    parser.add_argument("--profile", choices=("full", "quick", "test"), default="full")
    parser.add_argument("--results", required=True, help="File to append one JSON result line per scenario to.")
    parser.add_argument("names", nargs="+")
    args = parser.parse_args(argv)
    # SIGTERM (a timeout, a parent stopping us) unwinds like Ctrl-C, so the harness stops what it started.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    logging.getLogger("pymilvus").setLevel(logging.ERROR)
    with Harness() as h:
        for name in args.names:
            s = scenario(name)
            print(f"reliability: {name} ...", file=sys.stderr, flush=True)
            row = run_one(h, s, args.profile)
            print(
                f"reliability: {name}: {'ok' if row['ok'] else 'FAILED'} in {row['seconds']} s",
                file=sys.stderr,
                flush=True,
            )
            with open(args.results, "a", encoding="utf-8") as results:
                results.write(json.dumps(row, default=str) + "\n")
            h.ensure_up()
    return 0


if __name__ == "__main__":
    sys.exit(main())
