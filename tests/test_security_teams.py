"""Issue 20, findings 1-3 and 9 (Teams side): the unauthenticated endpoint stays local, the content type is exact,
downloads go only where Teams hands files from, and only the Teams channel is served.

Real aiohttp servers on loopback stand in for Teams and for file hosts; real Redis behind the endpoint."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from uuid import uuid4

import aiohttp
import pytest
from aiohttp import web

from agent.settings import ConfigError
from bot.assistant import Assistant
from bot.downloads import DownloadError, fetch_file
from tests.test_teams import fixture, teams_endpoint

ROOT = Path(__file__).resolve().parent.parent


def test_the_unauthenticated_endpoint_refuses_to_listen_on_a_reachable_address(services):
    """`serve` with no app id and host 0.0.0.0 stops at once with a reason (before the fix it served)."""
    from bot.localstack import free_port

    env = {
        **os.environ,
        "EXPERTBOT_TEAMS_HOST": "0.0.0.0",
        "EXPERTBOT_TEAMS_PORT": str(free_port()),
        "EXPERTBOT_TEAMS_APP_ID": "",
        "MICROSOFT_APP_ID": "",
        "EXPERTBOT_ANSWER_PROCESSES": "0",
        "PYTHONPATH": str(ROOT),
    }
    code = "from agent.settings import get_settings; from bot.teams.app import serve; serve(get_settings())"
    try:
        done = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, cwd=ROOT
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the unauthenticated endpoint kept serving on 0.0.0.0")
    assert done.returncode != 0
    assert "loopback" in done.stderr and "EXPERTBOT_TEAMS_APP_ID" in done.stderr


def test_the_explicit_remote_setting_is_logged_loudly(services, caplog):
    from bot.teams.app import check_listen_address

    remote = services.model_copy(update={"teams_host": "0.0.0.0", "teams_app_id": ""})
    with pytest.raises(ConfigError):
        check_listen_address(remote)
    with caplog.at_level(logging.CRITICAL):
        check_listen_address(remote.model_copy(update={"teams_allow_unauthenticated_remote": True}))
    assert any(r.levelno == logging.CRITICAL and "WITHOUT authentication" in r.getMessage() for r in caplog.records)
    check_listen_address(remote.model_copy(update={"teams_host": "127.0.0.1"}))  # loopback: fine
    check_listen_address(remote.model_copy(update={"teams_app_id": "some-app"}))  # authenticated: fine


def test_without_authentication_a_remote_service_url_or_another_channel_is_refused(services):
    """The experiment of the review: a forged tenant, scope "*" and an admin's id, replies to the attacker."""
    admin = "0a0a0a0a-admin-4000-8000-000000000000"
    assistant = Assistant(services.model_copy(update={"admins": admin}))

    async def scenario() -> tuple[list[int], int]:
        async with teams_endpoint(assistant, "victim") as teams:
            statuses = []
            for service_url, channel in (
                ("http://203.0.113.7:8080/", "msteams"),
                ("https://smba.trafficmanager.net/amer/", "msteams"),
                (teams.connector.url, "slack"),
            ):
                act = teams.activity("message_personal.json", text="forget guide.md")
                act["conversation"]["id"] = "*"
                act["from"]["aadObjectId"] = admin
                act["serviceUrl"], act["channelId"] = service_url, channel
                statuses.append((await teams.post(act))[0])
            await asyncio.sleep(0.5)
            return statuses, len(teams.connector.sent)

    statuses, sent = asyncio.run(scenario())
    assert statuses == [403, 403, 403]
    assert sent == 0


def test_the_content_type_must_be_exactly_json(services):
    """A web page can POST `text/plain; application/json` cross-site without a preflight: refused."""
    assistant = Assistant(services)

    async def scenario() -> list[int]:
        async with teams_endpoint(assistant, "teams-ctype") as teams:
            act = teams.activity("message_personal.json", text="help")
            out = []
            for ctype in ("text/plain; application/json", "text/plain;charset=application/json", "application/json"):
                body = aiohttp.payload.JsonPayload({**act, "id": uuid4().hex}, content_type=ctype)
                async with teams.http.post(teams.url, data=body) as resp:
                    out.append(resp.status)
            return out

    assert asyncio.run(scenario()) == [415, 415, 201]


def test_without_authentication_a_file_from_a_remote_host_is_not_fetched(services):
    """The refusal edits the file's one progress message (issue 19), so it is looked for among edits too."""
    assistant = Assistant(services)

    async def scenario() -> str:
        async with teams_endpoint(assistant, "teams-dl") as teams:
            act = teams.activity("message_personal.json", text="")
            attachment = fixture("file_download_info_attachment.json")
            attachment["content"]["downloadUrl"] = "http://files.attacker.invalid/guide.md"
            act["attachments"] = [attachment]
            await teams.post(act)
            reply = await teams.seen(act["conversation"]["id"], lambda s: "not allowed" in s.text, timeout_s=30)
            return reply.text

    assert "not loopback" in asyncio.run(scenario())


@asynccontextmanager
async def file_host(hits: list[str]) -> AsyncIterator[int]:
    """A file host on loopback whose /redirect sends the client on to localhost."""

    async def serve(request: web.Request) -> web.StreamResponse:
        hits.append(request.path)
        if request.path == "/redirect":
            raise web.HTTPFound(f"http://localhost:{request.url.port}/file.txt")
        return web.Response(body=b"plain text content", content_type="text/plain")

    app = web.Application()
    app.router.add_get("/{tail:.*}", serve)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


def test_the_teams_download_policy_wants_https_from_sharepoint_or_onedrive_at_a_public_address():
    from bot.url_policy import teams_download_policy

    policy = teams_download_policy("*.sharepoint.com,onedrive.live.com")
    assert policy.problem("https://contoso.sharepoint.com/personal/a/doc.pdf") is None
    assert policy.problem("https://onedrive.live.com/download?id=1") is None
    for bad in (
        "http://contoso.sharepoint.com/doc.pdf",  # not https
        "https://sharepoint.com.attacker.example/doc.pdf",
        "https://attacker.example/doc.pdf",
        "https://169.254.169.254/latest/meta-data/",
        "https://127.0.0.1/x",
        "file:///etc/passwd",
    ):
        assert policy.problem(bad), bad


def test_every_redirect_hop_is_checked_and_names_resolving_to_private_addresses_are_refused():
    from bot.url_policy import PublicResolver, UrlPolicy

    hits: list[str] = []
    only_127 = UrlPolicy(frozenset({"http"}), ("127.0.0.1",), public_only=False)
    public = UrlPolicy(frozenset({"http"}), ("localhost",), public_only=True)

    async def scenario() -> tuple[str, str, bytes]:
        async with file_host(hits) as port, aiohttp.ClientSession() as plain:
            with pytest.raises(DownloadError) as redirected:
                await fetch_file(plain, f"http://127.0.0.1:{port}/redirect", "f.txt", max_bytes=1000, policy=only_127)
            resolver_session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(resolver=PublicResolver()))
            async with resolver_session:
                with pytest.raises(DownloadError) as private:
                    await fetch_file(
                        resolver_session, f"http://localhost:{port}/file.txt", "f.txt", max_bytes=1000, policy=public
                    )
            ok = await fetch_file(plain, f"http://127.0.0.1:{port}/file.txt", "f.txt", max_bytes=1000, policy=only_127)
            return str(redirected.value), str(private.value), ok

    redirected, private, ok = asyncio.run(scenario())
    assert "localhost is not a host" in redirected
    assert "failed" in private
    assert ok == b"plain text content"
    assert hits == ["/redirect", "/file.txt"]  # neither the redirect target nor the private name was fetched


def test_with_authentication_only_the_msteams_channel_is_served(services):
    """Finding 9: a validly signed activity from another Bot Framework channel (Direct Line, Emulator) is refused."""
    from tests.test_teams import _Signer

    signer = _Signer()
    app_id = "5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d"
    auth = {"teams_app_id": app_id, "teams_app_password": "secret", "teams_openid_metadata_url": signer.metadata_url}
    assistant = Assistant(services.model_copy(update=auth))

    async def scenario() -> dict[str, int]:
        async with teams_endpoint(assistant, "teams-channels") as teams:
            out = {}
            for channel in ("directline", "emulator", "msteams"):
                act = teams.activity("message_personal.json", text="help")
                act["channelId"] = channel
                token = signer.token(app_id, teams.connector.url)
                out[channel] = (await teams.post(act, {"Authorization": f"Bearer {token}"}))[0]
            return out

    try:
        statuses = asyncio.run(scenario())
    finally:
        signer.server.shutdown()
    assert statuses["directline"] == statuses["emulator"] == 403
    assert statuses["msteams"] in (200, 201)
