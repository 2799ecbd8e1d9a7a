"""Running the Slack surface: Socket Mode (a websocket out to Slack, no public URL) or HTTP mode
(`POST /slack/events` on aiohttp, signature and timestamp checked by bolt; 401 otherwise)."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler

from agent.settings import Settings
from bot.answer_pool import answer_pool
from bot.assistant import Assistant
from bot.health import add_health_routes
from bot.slack.app import SlackBot

log = logging.getLogger(__name__)
EVENTS_PATH = "/slack/events"
SHUTDOWN_S = 5.0


def web_app(bot: SlackBot) -> web.Application:
    """`POST /slack/events` for events, commands and interactivity alike; `GET /livez` (the process answers) and
    `GET /healthz` (ready: Redis, Milvus, workers, adapter) for load balancers and orchestrators."""

    async def events(request: web.Request) -> web.Response:
        response = await bot.app.async_dispatch(await to_bolt_request(request))
        return await to_aiohttp_response(response)

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def close(_: web.Application) -> None:
        await bot.close()

    app = web.Application()
    app.router.add_post(EVENTS_PATH, events)
    app.router.add_get("/livez", health)
    add_health_routes(app, bot.assistant.settings)
    app.on_cleanup.append(close)
    return app


async def start_http(bot: SlackBot, host: str, port: int) -> web.AppRunner:
    """Listen on host:port; the caller cleans the returned runner up. Port 0 picks a free one."""
    # On shutdown, requests in flight get a few seconds (an ack takes milliseconds), not aiohttp's default 60 s.
    runner = web.AppRunner(web_app(bot), access_log=None, shutdown_timeout=SHUTDOWN_S)
    await runner.setup()
    await web.TCPSite(runner, host, port, backlog=1024).start()
    return runner


async def connect_socket_mode(bot: SlackBot, app_token: str) -> AsyncSocketModeHandler:
    """Open the Socket Mode websocket (`apps.connections.open` with the app-level token, then connect)."""
    handler = AsyncSocketModeHandler(bot.app, app_token)
    await handler.connect_async()  # type: ignore[no-untyped-call]
    return handler


async def serve(settings: Settings) -> None:
    """Run until SIGINT/SIGTERM: warm the chat core first, so that the first question is not the slow one."""
    if settings.slack_socket_mode:
        settings.require("slack_bot_token", "slack_app_token")
    else:
        settings.require("slack_bot_token", "slack_signing_secret")
    # The event loop acknowledges Slack's requests while answer threads compute: let it have the GIL back
    # within 1 ms instead of the default 5 ms.
    sys.setswitchinterval(0.001)
    processes = settings.answer_processes
    pool = await asyncio.to_thread(answer_pool, settings, processes) if processes else None
    assistant = Assistant(settings, answer_pool=pool)
    await assistant.warm_up()
    # The models and libraries loaded by now are millions of objects that live as long as the process: keep
    # them out of the cyclic collector, whose full passes over them paused the event loop for ~300 ms.
    gc.collect()
    gc.freeze()
    try:
        await _serve(settings, assistant)
    finally:
        if pool is not None:  # queued answers are dropped; the one being computed finishes on its own
            pool.shutdown(wait=False, cancel_futures=True)


async def _serve(settings: Settings, assistant: Assistant) -> None:
    bot = SlackBot(settings, assistant)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if settings.slack_socket_mode:
        handler = await connect_socket_mode(bot, str(settings.slack_app_token))
        log.info("Slack: connected in Socket Mode")
        await stop.wait()
        await handler.close_async()  # type: ignore[no-untyped-call]
        await bot.close()
        return
    runner = await start_http(bot, settings.slack_host, settings.slack_port)
    log.info("Slack: HTTP mode on %s:%s%s", settings.slack_host, settings.slack_port, EVENTS_PATH)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
