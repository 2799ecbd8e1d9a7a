"""The training report beside each adapter: losses as JSON and a loss-curve PNG.

The PNG is drawn by hand (zlib + struct: an 8-bit RGB image needs a signature, IHDR, IDAT and IEND chunks) so the
trainer needs no plotting library: raw loss per step in light blue, its moving average in dark blue, on a grid.
"""

from __future__ import annotations

import itertools
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

Color = tuple[int, int, int]
_WHITE: Color = (255, 255, 255)
_GRID: Color = (225, 225, 225)
_AXIS: Color = (60, 60, 60)
_RAW: Color = (150, 190, 235)
_SMOOTH: Color = (20, 70, 160)


def moving_average(values: Sequence[float], window: int) -> list[float]:
    out: list[float] = []
    total = 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


class _Canvas:
    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.pixels = bytearray(bytes(_WHITE) * (width * height))

    def dot(self, x: int, y: int, color: Color) -> None:
        if 0 <= x < self.width and 0 <= y < self.height:
            i = 3 * (y * self.width + x)
            self.pixels[i : i + 3] = bytes(color)

    def line(self, x0: int, y0: int, x1: int, y1: int, color: Color, thick: int = 1) -> None:
        """Bresenham's line, thickened by a square brush."""
        dx, dy = abs(x1 - x0), -abs(y1 - y0)
        sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
        error = dx + dy
        while True:
            for ox in range(thick):
                for oy in range(thick):
                    self.dot(x0 + ox, y0 + oy, color)
            if x0 == x1 and y0 == y1:
                return
            e2 = 2 * error
            if e2 >= dy:
                error += dy
                x0 += sx
            if e2 <= dx:
                error += dx
                y0 += sy

    def png(self) -> bytes:
        def chunk(kind: bytes, data: bytes) -> bytes:
            return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

        row = 3 * self.width
        raw = b"".join(b"\x00" + bytes(self.pixels[y * row : (y + 1) * row]) for y in range(self.height))
        header = struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0)  # 8-bit RGB
        body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
        return b"\x89PNG\r\n\x1a\n" + body


def loss_curve_png(losses: Sequence[float], path: Path, *, width: int = 640, height: int = 360) -> Path:
    """Plot the losses (x: step, y: loss from 0 to the highest loss) into a PNG file."""
    canvas = _Canvas(width, height)
    left, right, top, bottom = 40, width - 15, 15, height - 30
    for k in range(6):  # horizontal grid at every fifth of the loss range, vertical at every tenth of the steps
        y = bottom - k * (bottom - top) // 5
        canvas.line(left, y, right, y, _GRID)
    for k in range(11):
        x = left + k * (right - left) // 10
        canvas.line(x, top, x, bottom, _GRID)
    canvas.line(left, top, left, bottom, _AXIS, 2)
    canvas.line(left, bottom, right, bottom, _AXIS, 2)
    if losses:
        high = max(max(losses), 1e-9)

        def point(i: int, v: float) -> tuple[int, int]:
            x = left + (i * (right - left)) // max(len(losses) - 1, 1)
            return x, bottom - int(min(max(v, 0.0), high) / high * (bottom - top))

        for series, color, thick in ((losses, _RAW, 1), (moving_average(losses, 10), _SMOOTH, 2)):
            points = [point(i, v) for i, v in enumerate(series)]
            for (x0, y0), (x1, y1) in itertools.pairwise(points):
                canvas.line(x0, y0, x1, y1, color, thick)
            if len(points) == 1:
                canvas.line(*points[0], *points[0], color, 3)
    path.write_bytes(canvas.png())
    return path
