"""Bot Framework authentication that reuses its HTTP clients instead of building new ones on every turn.

botbuilder's `CloudAdapter` asks for a new connector client and a new user-token client for each incoming
activity and each proactive message. Each one is a fresh msrest configuration (retry tables, config parsers) and
a fresh `requests` session, so a new TCP connection: measured with cProfile, that was most of a turn's CPU and
kept the acknowledgement of a burst of 50 messages far above 200 ms. The clients are safe to share (one per
service URL, audience and app id), so they are created once and reused. Token validation is unchanged: every
request still goes through the inner authentication.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from botbuilder.schema import Activity
from botframework.connector.auth import (
    AuthenticateRequestResult,
    BotFrameworkAuthentication,
    ClaimsIdentity,
    ConnectorFactory,
    UserTokenClient,
)

MAX_CLIENTS = 64
"""Bounded: without authentication anyone can name a serviceUrl, and each would otherwise keep a client."""


class _ClientCache:
    def __init__(self) -> None:
        self.clients: OrderedDict[tuple[str, ...], Any] = OrderedDict()

    def get(self, key: tuple[str, ...]) -> Any:
        client = self.clients.get(key)
        if client is not None:
            self.clients.move_to_end(key)
        return client

    def put(self, key: tuple[str, ...], client: Any) -> None:
        self.clients[key] = client
        while len(self.clients) > MAX_CLIENTS:
            _, old = self.clients.popitem(last=False)
            _close(old)


def _close(client: Any) -> None:
    close = getattr(getattr(client, "config", None), "pipeline", None)
    sender = getattr(close, "_sender", None)
    driver = getattr(sender, "driver", None)
    session = getattr(driver, "session", None)
    if session is not None and hasattr(session, "close"):
        session.close()


def _app_id(claims_identity: ClaimsIdentity) -> str:
    claims = claims_identity.claims or {}
    return str(claims.get("aud") or claims.get("appid") or claims.get("azp") or "")


class _CachingConnectorFactory(ConnectorFactory):  # type: ignore[misc]
    def __init__(self, inner: ConnectorFactory, cache: _ClientCache, app_id: str) -> None:
        self._inner = inner
        self._cache = cache
        self._app_id = app_id

    async def create(self, service_url: str, audience: str | None = None) -> Any:
        key = ("connector", self._app_id, service_url, audience or "")
        client = self._cache.get(key)
        if client is None:
            client = await self._inner.create(service_url, audience)
            self._cache.put(key, client)
        return client


class ReusedClientsAuthentication(BotFrameworkAuthentication):  # type: ignore[misc]
    """Delegates everything to `inner`; caches the connector and user-token clients it creates."""

    def __init__(self, inner: BotFrameworkAuthentication) -> None:
        self._inner = inner
        self._cache = _ClientCache()

    async def authenticate_request(self, activity: Activity, auth_header: str) -> AuthenticateRequestResult:
        result: AuthenticateRequestResult = await self._inner.authenticate_request(activity, auth_header)
        if result.connector_factory is not None:
            app_id = _app_id(result.claims_identity)
            result.connector_factory = _CachingConnectorFactory(result.connector_factory, self._cache, app_id)
        return result

    async def authenticate_streaming_request(self, auth_header: str, channel_id_header: str) -> Any:
        return await self._inner.authenticate_streaming_request(auth_header, channel_id_header)

    def create_connector_factory(self, claims_identity: ClaimsIdentity) -> ConnectorFactory:
        inner = self._inner.create_connector_factory(claims_identity)
        return _CachingConnectorFactory(inner, self._cache, _app_id(claims_identity))

    async def create_user_token_client(self, claims_identity: ClaimsIdentity) -> UserTokenClient:
        key = ("user-token", _app_id(claims_identity))
        client = self._cache.get(key)
        if client is None:
            client = await self._inner.create_user_token_client(claims_identity)
            self._cache.put(key, client)
        return client

    def create_bot_framework_client(self) -> Any:
        return self._inner.create_bot_framework_client()

    def get_originating_audience(self) -> str:
        return str(self._inner.get_originating_audience())

    async def authenticate_channel_request(self, auth_header: str) -> ClaimsIdentity:
        return await self._inner.authenticate_channel_request(auth_header)

    def close(self) -> None:
        for client in self._cache.clients.values():
            _close(client)
        self._cache.clients.clear()
