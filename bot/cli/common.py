"""What every command group shares: the consoles, the common options, settings and audience, and failure exits.

Results go to stdout (`out`, or one JSON object with --json); progress and diagnostics go to stderr (`err`).
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from agent.settings import ConfigError, Settings, get_settings
from agent.types import TENANT_WIDE, Audience

err = Console(stderr=True)
out = Console()

ScopeOpt = Annotated[
    str | None, typer.Option("--scope", help=f"Conversation scope; '{TENANT_WIDE}' means tenant-wide.")
]
TenantOpt = Annotated[str | None, typer.Option("--tenant", help="Workspace / team id.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]


def config_error(exc: ConfigError) -> typer.Exit:
    """One line naming the bad setting (not wrapped, not read as markup), and exit status 2."""
    err.print(f"[red]configuration error:[/] {escape(str(exc))}", soft_wrap=True)
    return typer.Exit(2)


def load_settings() -> Settings:
    """The settings, or exit 2 naming the bad setting."""
    try:
        return get_settings()
    except ConfigError as exc:
        raise config_error(exc) from None


def audience_of(settings: Settings, tenant: str | None, scope: str | None) -> Audience:
    return Audience(tenant or settings.default_tenant, scope or settings.default_scope)


def print_json(data: dict[str, Any]) -> None:
    """UTF-8 JSON on one line: names and answers in any script stay readable."""
    sys.stdout.write(json.dumps(data, ensure_ascii=False) + "\n")


def fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[red]error:[/] {message}")
    return typer.Exit(code)
