"""The Teams app package: built from the manifest template, validated against the schema shipped in the repo,
icons of the required sizes; and the small schema checker itself. Fast: no service is started."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agent.settings import get_settings, load_settings
from bot.cli.app import app
from bot.teams.icons import MANIFEST_DIR, encode_png, png_size
from bot.teams.package import PackageError, build_package, package_errors
from bot.teams.validate import schema_errors

APP_ID = "3f1e2d4c-5b6a-4978-8a9b-0c1d2e3f4a5b"


def _rezip(original: bytes, replace: dict[str, bytes | None]) -> bytes:
    """The same zip with some files replaced (None: removed)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(original)) as src, zipfile.ZipFile(out, "w") as dst:
        for name in src.namelist():
            if name in replace:
                data = replace[name]
                if data is not None:
                    dst.writestr(name, data)
            else:
                dst.writestr(name, src.read(name))
    return out.getvalue()


@pytest.fixture()
def package(tmp_path: Path) -> bytes:
    path = build_package(load_settings(teams_app_id=APP_ID), tmp_path / "app.zip", name="Acme Expert")
    return path.read_bytes()


def test_the_package_holds_a_valid_manifest_with_files_commands_and_icons(package):
    assert package_errors(package) == []
    with zipfile.ZipFile(io.BytesIO(package)) as archive:
        assert sorted(archive.namelist()) == ["color.png", "manifest.json", "outline.png"]
        manifest = json.loads(archive.read("manifest.json"))
        assert png_size(archive.read("color.png")) == (192, 192)
        assert png_size(archive.read("outline.png")) == (32, 32)
    assert manifest["id"] == APP_ID and manifest["name"]["short"] == "Acme Expert"
    (bot,) = manifest["bots"]
    assert bot["botId"] == APP_ID and bot["supportsFiles"] is True
    assert set(bot["scopes"]) == {"personal", "team", "groupChat"}
    titles = [c["title"] for c in bot["commandLists"][0]["commands"]]
    assert titles == ["ask", "status", "docs", "teach", "forget", "retrain", "help"]


def test_a_broken_package_is_refused_with_reasons(package):
    with zipfile.ZipFile(io.BytesIO(package)) as archive:
        manifest = json.loads(archive.read("manifest.json"))
    manifest["name"]["short"] = "An app name that is far too long for Teams"
    manifest["bots"][0]["botId"] = "not-a-guid"
    manifest["bots"][0]["scopes"].append("everywhere")
    manifest["surprise"] = True
    broken = _rezip(
        package, {"manifest.json": json.dumps(manifest).encode(), "outline.png": encode_png(48, lambda u, v: (0,) * 4)}
    )
    errors = "\n".join(package_errors(broken))
    assert "$.name.short: longer than 30 characters" in errors
    assert "$.bots[0].botId: 'not-a-guid' does not match" in errors
    assert "'everywhere' is not one of" in errors
    assert "unexpected property 'surprise'" in errors
    assert "outline.png must be a 32x32 PNG, found (48, 48)" in errors
    missing = package_errors(_rezip(package, {"color.png": None}))
    assert missing == ["icons.color: the file 'color.png' is not in the zip"]
    assert package_errors(b"PK not really") == ["not a zip file"]


def test_packaging_needs_the_app_id(tmp_path):
    with pytest.raises(PackageError, match="EXPERTBOT_TEAMS_APP_ID"):
        build_package(load_settings(teams_app_id=""), tmp_path / "app.zip")


@pytest.fixture()
def fresh_settings():
    """The CLI reads the process-wide settings; rebuild them from the environment around each invocation."""
    get_settings.cache_clear()
    yield get_settings.cache_clear
    get_settings.cache_clear()


def test_the_cli_builds_the_package(tmp_path, monkeypatch, fresh_settings):
    monkeypatch.setenv("EXPERTBOT_TEAMS_APP_ID", APP_ID)
    out = tmp_path / "expertbot-teams.zip"
    result = CliRunner().invoke(app, ["teams", "package", "--out", str(out), "--version", "1.2.3"])
    assert result.exit_code == 0, result.output
    assert "valid Teams app package" in result.output
    assert package_errors(out.read_bytes()) == []
    monkeypatch.setenv("EXPERTBOT_TEAMS_APP_ID", "")
    fresh_settings()
    result = CliRunner().invoke(app, ["teams", "package", "--out", str(out)])
    assert result.exit_code == 1 and "EXPERTBOT_TEAMS_APP_ID" in result.output


def test_the_committed_icons_are_the_drawn_ones(tmp_path):
    from bot.teams.icons import draw_icons

    draw_icons(tmp_path)
    for name in ("color.png", "outline.png"):
        assert (tmp_path / name).read_bytes() == (MANIFEST_DIR / name).read_bytes()


def test_the_schema_checker_reports_what_it_cannot_check():
    assert schema_errors({"a": 1}, {"type": "object", "properties": {"a": {"type": "integer"}}}) == []
    assert schema_errors({"a": True}, {"type": "object", "properties": {"a": {"type": "integer"}}}) == [
        "$.a: expected integer, got bool"
    ]
    with pytest.raises(ValueError, match="does not know"):
        schema_errors("x", {"type": "string", "format": "uri"})
