"""The Teams endpoint: an aiohttp app serving `POST /api/messages` through botbuilder's `CloudAdapter`.

The edge in front of botbuilder answers what botbuilder gets wrong or cannot check offline: with an app id
set, a request without a bearer token, or with one that is not a JWT, is expired or names another app, gets
401 before botbuilder sees it (botbuilder answers 500 to a malformed token); a body that is not a JSON activity
gets 400. A token that passes goes on to botbuilder, which checks its signature against the Bot Framework's
published keys. Without an app id, authentication is off: what the Bot Framework Emulator expects. That local
mode trusts the body for tenant, conversation and user, so it listens on loopback only (unless
EXPERTBOT_TEAMS_ALLOW_UNAUTHENTICATED_REMOTE says otherwise, logged loudly) and accepts only loopback serviceUrls.
Every mode requires exactly `application/json`, which a web page cannot send cross-site without a preflight.
"""

from __future__ import annotations

import gc
import json
import logging
from contextlib import suppress
from typing import Any

import jwt
from aiohttp import web
from azure.core.exceptions import DeserializationError
from botbuilder.core import TurnContext
from botbuilder.integration.aiohttp import CloudAdapter, ConfigurationBotFrameworkAuthentication
from botframework.connector.auth import AuthenticationConstants

from agent.logging_setup import log_context
from agent.settings import ConfigError, Settings
from bot.answer_pool import answer_pool
from bot.assistant import Assistant
from bot.health import add_health_routes
from bot.teams.clients import ReusedClientsAuthentication
from bot.teams.handler import TeamsBot, plain_message
from bot.teams.proactive import Messenger
from bot.url_policy import is_loopback_host, is_loopback_url

log = logging.getLogger(__name__)

MESSAGES_PATH = "/api/messages"
SEE_LOG = "The details are in the bot's log."
TOKEN_LEEWAY_S = 300
"""Clock skew botbuilder also allows."""
TEAMS_CHANNEL = "msteams"
LOCAL_CHANNELS = frozenset({TEAMS_CHANNEL, "emulator"})
"""Without authentication the Bot Framework Emulator ("emulator") is the expected sender."""


def _speed_up_msrest() -> None:
    """botbuilder builds several msrest clients per turn, and each one computes its retry codes with a list
    membership test over 999 x 500 items: about 6 ms of CPU a client, most of a turn's cost (measured with
    cProfile). The codes are only ever tested for membership, so a frozenset gives the same policy at once."""
    from msrest.universal_http.requests import ClientRetryPolicy

    ClientRetryPolicy.safe_codes = frozenset(ClientRetryPolicy.safe_codes)  # type: ignore[assignment]


class _BotConfig:
    """The attribute names botbuilder's configuration classes read."""

    def __init__(self, settings: Settings) -> None:
        self.APP_ID = settings.teams_app_id
        self.APP_PASSWORD = settings.teams_app_password
        self.APP_TYPE = settings.teams_app_type
        self.APP_TENANTID = settings.teams_app_tenant_id
        if settings.teams_openid_metadata_url:  # another signer: botbuilder then needs every endpoint spelled out
            tenant = settings.teams_app_tenant_id if settings.teams_app_type == "SingleTenant" else ""
            self.TO_BOT_FROM_CHANNEL_OPENID_METADATA_URL = settings.teams_openid_metadata_url
            self.TO_BOT_FROM_CHANNEL_TOKEN_ISSUER = settings.teams_token_issuer
            self.TO_CHANNEL_FROM_BOT_LOGIN_URL = AuthenticationConstants.TO_CHANNEL_FROM_BOT_LOGIN_URL_PREFIX + (
                tenant or AuthenticationConstants.DEFAULT_CHANNEL_AUTH_TENANT
            )
            self.TO_CHANNEL_FROM_BOT_OAUTH_SCOPE = AuthenticationConstants.TO_CHANNEL_FROM_BOT_OAUTH_SCOPE
            self.OAUTH_URL = AuthenticationConstants.OAUTH_URL


def token_problem(authorization: str, app_id: str) -> str | None:
    """Why a request's Authorization header cannot carry a valid token for `app_id` (None when it may).

    Only what needs no key is checked here: the shape, the audience and the expiry. The signature is botbuilder's.
    """
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return "a Bot Framework bearer token is required"
    options: Any = {"verify_signature": False, "verify_aud": True, "verify_exp": True}
    try:
        jwt.get_unverified_header(token.strip())
        jwt.decode(token.strip(), options=options, audience=app_id, leeway=TOKEN_LEEWAY_S)
    except jwt.ExpiredSignatureError:
        return "the token has expired"
    except (jwt.InvalidAudienceError, jwt.MissingRequiredClaimError):
        return "the token was issued for another app"
    except jwt.PyJWTError:
        return "the token is not a valid JWT"
    return None


def _refuse(status: int, reason: str) -> web.Response:
    headers = {"WWW-Authenticate": 'Bearer realm="expertbot"'} if status == 401 else None
    return web.json_response({"error": reason}, status=status, headers=headers)


async def _on_turn_error(context: TurnContext, error: Exception) -> None:
    """The person gets one short line; the log gets everything."""
    log.error("Teams turn failed (%s)", context.activity.type, exc_info=error)
    with suppress(Exception):
        await context.send_activity(
            plain_message("Sorry, something went wrong on my side. The details are in the bot's log.")
        )


class TeamsEndpoint:
    """The adapter, the bot and the assistant behind one aiohttp app."""

    def __init__(self, settings: Settings, assistant: Assistant | None = None) -> None:
        self.settings = settings
        self.assistant = assistant or Assistant(settings)
        self.auth = ReusedClientsAuthentication(ConfigurationBotFrameworkAuthentication(_BotConfig(settings)))
        self.adapter = CloudAdapter(self.auth)
        self.adapter.on_turn_error = _on_turn_error
        self.messenger = Messenger(self.adapter, settings.teams_app_id)
        self.bot = TeamsBot(self.assistant, self.messenger)

    async def messages(self, request: web.Request) -> web.StreamResponse:
        if self.settings.teams_auth_enabled:
            problem = token_problem(request.headers.get("Authorization", ""), self.settings.teams_app_id)
            if problem:
                return _refuse(401, problem)
        if request.content_type != "application/json":  # the media type alone, parameters (charset) aside
            return _refuse(415, "send the activity as application/json")
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _refuse(400, "the body is not JSON")
        if not isinstance(body, dict) or not isinstance(body.get("type"), str):
            return _refuse(400, "the body is not a Bot Framework activity")
        problem = self.activity_problem(body)
        if problem:
            log.warning("activity refused: %s", problem)
            return _refuse(403, problem)
        try:
            # Every line logged for this activity, also by the background work it starts, carries its id.
            with log_context(request=str(body.get("id") or "") or None):
                response = await self.adapter.process(request, self.bot)
        except (PermissionError, jwt.PyJWTError) as exc:
            return _refuse(401, f"the token was refused ({type(exc).__name__})")
        except DeserializationError:
            return _refuse(400, "the body is not a Bot Framework activity")
        except Exception as exc:
            # Errors inside a turn end in on_turn_error; what escapes comes from the token checks, where botbuilder
            # raises plain Exceptions (unknown key, wrong algorithm, missing endorsement).
            log.warning("request refused: %s", exc, exc_info=exc)
            if not self.settings.teams_auth_enabled:
                raise
            return _refuse(401, "the token was refused")
        return response or web.Response(status=201)

    def activity_problem(self, body: dict[str, Any]) -> str | None:
        """Why an activity is refused before botbuilder sees it: another channel than Teams, or, without
        authentication, a serviceUrl that is not loopback (replies would go wherever the sender says)."""
        channel = body.get("channelId")
        allowed = LOCAL_CHANNELS if not self.settings.teams_auth_enabled else frozenset({TEAMS_CHANNEL})
        if channel not in allowed:
            return f"channel {channel!r} is not served here (only {', '.join(sorted(allowed))})"
        service_url = body.get("serviceUrl")
        if not self.settings.teams_auth_enabled and not (isinstance(service_url, str) and is_loopback_url(service_url)):
            return "without authentication only a loopback serviceUrl is accepted (set EXPERTBOT_TEAMS_APP_ID)"
        return None

    async def health(self, _: web.Request) -> web.Response:
        return web.json_response({"ok": True, "auth": self.settings.teams_auth_enabled, "busy": self.messenger.busy})


ENDPOINT = web.AppKey("teams_endpoint", TeamsEndpoint)


def create_app(settings: Settings, *, assistant: Assistant | None = None, warm_up: bool = False) -> web.Application:
    """The aiohttp app; `warm_up` loads the models in the background at start, so the first answer is not slow."""
    _speed_up_msrest()
    endpoint = TeamsEndpoint(settings, assistant)
    app = web.Application()
    app[ENDPOINT] = endpoint
    app.router.add_post(MESSAGES_PATH, endpoint.messages)
    app.router.add_get("/livez", endpoint.health)  # the process answers (and how busy it is)
    add_health_routes(app, settings)  # /healthz: ready (Redis, Milvus, workers, adapter)

    async def start(_: web.Application) -> None:
        if warm_up:
            endpoint.messenger.spawn(_warm(endpoint.assistant), "warm-up")

    async def stop(_: web.Application) -> None:
        await endpoint.messenger.drain(timeout_s=5.0)  # within the 10 s a stopping stack gives its children
        await endpoint.bot.close()
        endpoint.auth.close()

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    return app


async def _warm(assistant: Assistant) -> None:
    try:
        await assistant.warm_up()
    except Exception:
        log.exception("warm-up failed; the first question will retry")
    # The models leave millions of long-lived objects; a full garbage collection walking them stalled every
    # request for about 300 ms under load (measured). Frozen objects are never walked again.
    gc.collect()
    gc.freeze()


def check_listen_address(settings: Settings) -> None:
    """Refuse to serve the unauthenticated endpoint on a reachable address, unless explicitly allowed (loudly)."""
    if settings.teams_auth_enabled or is_loopback_host(settings.teams_host):
        return
    if not settings.teams_allow_unauthenticated_remote:
        raise ConfigError(
            f"the Teams endpoint has no authentication (EXPERTBOT_TEAMS_APP_ID is empty), so it listens on loopback "
            f"only, not {settings.teams_host}: set EXPERTBOT_TEAMS_APP_ID (and the password), or "
            "EXPERTBOT_TEAMS_HOST=127.0.0.1"
        )
    log.critical(
        "SECURITY: the Teams endpoint listens on %s WITHOUT authentication "
        "(EXPERTBOT_TEAMS_ALLOW_UNAUTHENTICATED_REMOTE): anyone who reaches it can act as any user",
        settings.teams_host,
    )
    print(
        f"WARNING: unauthenticated Teams endpoint on {settings.teams_host}: anyone reaching it can act as any user",
        flush=True,
    )


def serve(settings: Settings) -> None:
    """Run the endpoint until interrupted (`expertbot teams serve`)."""
    check_listen_address(settings)
    from bot.preflight import require_services

    require_services(settings)  # what is missing, said plainly, instead of a broken answer pool
    mode = "Bot Framework authentication on" if settings.teams_auth_enabled else "no authentication (Emulator)"
    print(f"Teams endpoint on http://{settings.teams_host}:{settings.teams_port}{MESSAGES_PATH} ({mode})", flush=True)
    # Answers computed in child processes leave this one's interpreter to the acknowledgements (as in Slack).
    pool = answer_pool(settings, settings.answer_processes) if settings.answer_processes else None
    try:
        web.run_app(
            create_app(settings, assistant=Assistant(settings, answer_pool=pool), warm_up=True),
            host=settings.teams_host,
            port=settings.teams_port,
            print=None,
            handle_signals=True,
        )
    finally:
        if pool is not None:  # queued answers are dropped; the one being computed finishes on its own
            pool.shutdown(wait=False, cancel_futures=True)


__all__ = ["ENDPOINT", "MESSAGES_PATH", "TeamsEndpoint", "check_listen_address", "create_app", "serve", "token_problem"]
