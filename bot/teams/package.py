"""The Teams app package: `manifest.json` (from `manifest/manifest.template.json`) and the two icons, zipped.

`build_package` fills the template, validates the result and writes the zip that an admin uploads in Teams
(Apps > Manage your apps > Upload an app); `package_errors` re-checks any zip the same way: the manifest against
the schema subset shipped in `manifest/schema.json`, the icon files it names, and their sizes (192x192, 32x32).
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

from agent.settings import Settings
from bot.teams.icons import MANIFEST_DIR, png_size
from bot.teams.validate import schema_errors

TEMPLATE = MANIFEST_DIR / "manifest.template.json"
SCHEMA = MANIFEST_DIR / "schema.json"
ICON_SIZES = {"color": (192, 192), "outline": (32, 32)}


class PackageError(ValueError):
    """The package would be refused by Teams; the message lists why."""


def _fill(node: Any, values: dict[str, str]) -> Any:
    """Replace {{name}} in every string of the template (values are inserted as data, never as JSON text)."""
    if isinstance(node, dict):
        return {k: _fill(v, values) for k, v in node.items()}
    if isinstance(node, list):
        return [_fill(v, values) for v in node]
    if isinstance(node, str):
        for key, value in values.items():
            node = node.replace("{{" + key + "}}", value)
    return node


def build_manifest(
    app_id: str, *, name: str = "Expert", developer: str = "expertbot", website: str, version: str = "1.0.0"
) -> dict[str, Any]:
    template = json.loads(TEMPLATE.read_text(encoding="utf-8"))
    values = {"app_id": app_id, "name": name, "developer": developer, "website": website, "version": version}
    manifest: dict[str, Any] = _fill(template, values)
    return manifest


def package_errors(zip_bytes: bytes) -> list[str]:
    """Why Teams would refuse this app package (empty when it is valid)."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(zip_bytes))
    except zipfile.BadZipFile:
        return ["not a zip file"]
    with archive:
        names = set(archive.namelist())
        if "manifest.json" not in names:
            return ["manifest.json is missing at the top of the zip"]
        try:
            manifest = json.loads(archive.read("manifest.json").decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return [f"manifest.json is not JSON ({exc})"]
        errors = schema_errors(manifest, json.loads(SCHEMA.read_text(encoding="utf-8")))
        icons = manifest.get("icons") if isinstance(manifest, dict) else None
        for kind, size in ICON_SIZES.items():
            file = icons.get(kind) if isinstance(icons, dict) else None
            if not isinstance(file, str) or file not in names:
                errors.append(f"icons.{kind}: the file {file!r} is not in the zip")
                continue
            found = png_size(archive.read(file))
            if found != size:
                errors.append(f"icons.{kind}: {file} must be a {size[0]}x{size[1]} PNG, found {found or 'not a PNG'}")
        return errors


def build_package(
    settings: Settings,
    out: Path,
    *,
    name: str = "Expert",
    developer: str = "expertbot",
    website: str = "https://github.com/expertbot/expertbot",
    version: str = "1.0.0",
) -> Path:
    """Write the app package to `out` (a .zip path) for the bot registered as EXPERTBOT_TEAMS_APP_ID."""
    if not settings.teams_app_id:
        raise PackageError("set EXPERTBOT_TEAMS_APP_ID to the bot's Microsoft App ID first (see README, Teams)")
    manifest = build_manifest(settings.teams_app_id, name=name, developer=developer, website=website, version=version)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("manifest.json", json.dumps(manifest, indent=2, ensure_ascii=False))
        for kind in ICON_SIZES:
            file = manifest["icons"][kind]
            archive.writestr(file, (MANIFEST_DIR / file).read_bytes())
    errors = package_errors(buffer.getvalue())
    if errors:
        raise PackageError("the app package is not valid:\n" + "\n".join(f"  {e}" for e in errors))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(buffer.getvalue())
    return out
