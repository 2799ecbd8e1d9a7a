"""The training report beside each adapter: `report.json` (losses, speed, memory) and `loss.png` (matplotlib).

The figure is drawn with matplotlib's object API on the Agg canvas (no pyplot, no display, no global state), so
it is safe in a Celery worker and in threads: raw loss per step in light blue, its moving average in dark blue.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def moving_average(values: Sequence[float], window: int) -> list[float]:
    out: list[float] = []
    total = 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def loss_curve_png(
    losses: Sequence[float], path: Path, *, title: str = "", width: int = 640, height: int = 360
) -> Path:
    """Plot the losses (x: optimiser step, y: loss) into a `width` x `height` PNG file."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    dpi = 100
    figure = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    steps = list(range(1, len(losses) + 1))
    axes.plot(steps, list(losses), color="#96beeb", linewidth=1, label="loss per step")
    if losses:
        window = max(1, min(10, len(losses) // 5 or 1))
        axes.plot(steps, moving_average(losses, window), color="#1446a0", linewidth=2, label=f"mean of {window}")
        axes.set_ylim(bottom=0)
    axes.set_xlabel("optimiser step")
    axes.set_ylabel("training loss")
    axes.grid(True, color="#e1e1e1")
    axes.legend(loc="upper right", frameon=False)
    if title:
        axes.set_title(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=dpi)
    return path
