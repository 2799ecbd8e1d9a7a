"""The app's two icons, drawn in code so that the repository holds no opaque binaries of unknown origin.

Teams requires a 192x192 full-colour icon and a 32x32 outline icon that is white on a transparent background.
`python -m bot.teams.icons` redraws `manifest/color.png` and `manifest/outline.png`; `png_size` reads a PNG's
dimensions for the package validation.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from pathlib import Path

MANIFEST_DIR = Path(__file__).parent / "manifest"
ACCENT = (0x3B, 0x5B, 0xDB)
Pixel = tuple[int, int, int, int]


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png(size: int, pixel: Callable[[float, float], Pixel]) -> bytes:
    """An RGBA PNG whose pixel at (x, y) is `pixel(u, v)` with u, v in [0, 1): the centre of that pixel."""
    rows = b"".join(
        b"\x00" + b"".join(bytes(pixel((x + 0.5) / size, (y + 0.5) / size)) for x in range(size)) for y in range(size)
    )
    header = struct.pack(">IIBBBBB", size, size, 8, 6, 0, 0, 0)  # 8-bit RGBA, no interlace
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(rows, 9)) + _chunk(b"IEND", b"")
    )


def png_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of a PNG, or None when the bytes are not one."""
    if len(data) < 24 or not data.startswith(b"\x89PNG\r\n\x1a\n") or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def _glyph(u: float, v: float) -> bool:
    """A speech bubble with a tick: "an expert answers"; in unit coordinates."""
    dx, dy = (u - 0.5) / 0.36, (v - 0.46) / 0.28
    ring = 0.72 <= dx * dx + dy * dy <= 1.0
    tail = 0.28 <= u <= 0.42 and 0.68 <= v <= 0.86 and (u - 0.28) >= (v - 0.68) * 0.8
    return ring or tail


def _color(u: float, v: float) -> Pixel:
    return (255, 255, 255, 255) if _glyph(u, v) else (*ACCENT, 255)


def _outline(u: float, v: float) -> Pixel:
    return (255, 255, 255, 255) if _glyph(u, v) else (0, 0, 0, 0)


def draw_icons(folder: Path = MANIFEST_DIR) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "color.png").write_bytes(encode_png(192, _color))
    (folder / "outline.png").write_bytes(encode_png(32, _outline))


if __name__ == "__main__":
    draw_icons()
