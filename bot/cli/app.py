"""`expertbot`: the command line. Each command is a thin shell over the chat core, the knowledge base or the
job client; this module assembles the command groups and turns known failures into one line with what to do."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from agent.settings import ConfigError, Settings, get_settings
from bot.cli import adapters, docs, knowledge, measure, training
from bot.cli.common import (
    JsonOpt,
    ScopeOpt,
    TenantOpt,
    audience_of,
    config_error,
    err,
    fail,
    load_settings,
    out,
    print_json,
)

app = typer.Typer(help="expertbot: your company's domain expert in chat.", no_args_is_help=True)
teams_app = typer.Typer(help="The Microsoft Teams endpoint and its app package.", no_args_is_help=True)
app.add_typer(docs.docs_app, name="docs")
app.add_typer(measure.eval_app, name="eval")
app.add_typer(measure.bench_app, name="bench")
app.add_typer(teams_app, name="teams")
app.add_typer(adapters.adapters_app, name="adapters")


@app.callback()
def _logging(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show debug logs.")] = False) -> None:
    from agent.logging_setup import setup_logging

    try:
        settings: Settings | None = get_settings()
    except ConfigError:
        settings = None  # the command itself reports the bad setting
    fmt = settings.log_format if settings else "text"
    setup_logging(settings, level=logging.DEBUG if verbose else logging.WARNING, fmt=fmt)


@app.command()
def up(
    chat: Annotated[bool, typer.Option("--chat/--no-chat", help="Open the chat console once started.")] = True,
    teams: Annotated[bool, typer.Option("--teams/--no-teams", help="Serve the Teams endpoint too.")] = True,
) -> None:
    """Start the local stack (Milvus Lite, Redis unless REDIS_URL is set, a worker, the Teams endpoint).

    It runs until Ctrl-C, SIGTERM, the terminal closing or its output breaking; one per data folder."""
    from bot.localstack import LocalStack, StackError
    from bot.localstack.stack import say

    settings = load_settings()
    try:
        with LocalStack(settings, teams=teams, training=True, slack=True) as stack:
            if chat:
                from bot.console import run_console

                run_console(settings)
            else:
                say("stack is up; press Ctrl-C to stop it")  # not rich: it exits on a broken pipe
                stack.wait()
    except (KeyboardInterrupt, BrokenPipeError):
        pass  # the stack has stopped (its `with`); a closed terminal is no error
    except StackError as exc:
        raise fail(str(exc)) from None


@app.command()
def chat(tenant: TenantOpt = None, scope: ScopeOpt = None) -> None:
    """Chat with the bot in this terminal (needs the stack: `expertbot up --no-chat` in another one)."""
    from bot.console import run_console

    settings = load_settings()
    run_console(settings, audience_of(settings, tenant, scope))


@app.command()
def slack(
    local: Annotated[
        bool, typer.Option("--local", help="Try it without Slack: a local Slack API, this terminal as the channel.")
    ] = False,
) -> None:
    """Run the Slack app: Socket Mode when SLACK_APP_TOKEN is set, else HTTP mode on /slack/events."""
    import asyncio

    if local:  # needs no Slack tokens; needs the stack, like `chat`
        from bot.slack.local import read_stdin_line, run_local

        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C leaves, like /quit
            asyncio.run(run_local(load_settings(), read_stdin_line, lambda text: print(text, flush=True)))
        return

    from slack_sdk.errors import SlackApiError

    from bot.slack.serve import serve

    logging.getLogger("bot").setLevel(logging.INFO)
    try:
        asyncio.run(serve(load_settings()))
    except ConfigError as exc:
        raise config_error(exc) from None
    except SlackApiError as exc:
        raise fail(f"Slack refused the connection ({exc.response.get('error')}): check the tokens in .env") from None
    # Answer threads still waiting on Milvus or Redis must not keep a stopped app alive: what matters is stored.
    logging.shutdown()
    os._exit(0)


@app.command()
def status(as_json: JsonOpt = False) -> None:
    """Health of Redis, Milvus and the workers, with queue depths and knowledge-base size."""
    from bot.health import check_health

    report = check_health(load_settings())
    if as_json:
        print_json(report)
    else:
        for key, value in report.items():
            if key in ("documents", "passages") and value is not None:
                value = f"{value} (tenant {report['tenant']}, every scope)"
            out.print(f"{key.replace('_', ' '):>20}: {value}", markup=False, highlight=False)
    if not report.get("ok"):
        raise typer.Exit(1)


@teams_app.command("serve")
def teams_serve() -> None:
    """Serve POST /api/messages for Teams (EXPERTBOT_TEAMS_PORT, 3978); needs the stack (`expertbot up`)."""
    from bot.teams.app import serve

    serve(load_settings())


@teams_app.command("package")
def teams_package(
    output: Annotated[Path, typer.Option("--out", help="Where to write the zip.")] = Path("expertbot-teams.zip"),
    name: Annotated[str, typer.Option(help="The app's name in Teams (30 characters at most).")] = "Expert",
    developer: Annotated[str, typer.Option(help="Publisher name shown in Teams.")] = "expertbot",
    website: Annotated[str, typer.Option(help="https URL of the publisher (also privacy and terms).")] = (
        "https://github.com/expertbot/expertbot"
    ),
    version: Annotated[str, typer.Option(help="App version, x.y.z; raise it for each upload.")] = "1.0.0",
) -> None:
    """Build the Teams app package (manifest + icons) for EXPERTBOT_TEAMS_APP_ID and validate it."""
    from bot.teams.package import PackageError, build_package

    try:
        path = build_package(load_settings(), output, name=name, developer=developer, website=website, version=version)
    except PackageError as exc:
        raise fail(str(exc)) from None
    out.print(f"{path}: valid Teams app package; upload it in Teams > Apps > Manage your apps")


# The command groups defined in their own modules, in the order `--help` shows them.
app.command()(knowledge.ingest)
app.command()(knowledge.ask)
app.command()(knowledge.search)
app.command("train")(training.train)
app.command("teach")(training.teach)


def main() -> None:
    """The console script: known failures become one line with what to do, not a traceback."""
    import redis
    from pymilvus.exceptions import MilvusException

    from agent.knowledge.store import StoreError

    try:
        app()
    except ConfigError as exc:  # a setting found wrong once the command runs (e.g. `teams serve` on 0.0.0.0)
        sys.exit(config_error(exc).exit_code)
    except MilvusException as exc:
        settings = get_settings()
        err.print(f"[red]error:[/] Milvus at {settings.effective_milvus_uri} did not answer ({exc.message}).")
        err.print("Start the local stack with `expertbot up --no-chat`, or point MILVUS_URI at your Milvus.")
        sys.exit(1)
    except redis.ConnectionError as exc:
        settings = get_settings()
        err.print(f"[red]error:[/] Redis at {settings.effective_redis_url} did not answer ({exc}).")
        err.print("Start the local stack with `expertbot up --no-chat`, or point REDIS_URL at your Redis.")
        sys.exit(1)
    except StoreError as exc:
        err.print(f"[red]error:[/] {exc}")
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
