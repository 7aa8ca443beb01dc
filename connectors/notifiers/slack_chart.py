"""The chart a Slack alert carries: the recent window, the expected band, the anomalies.

:func:`render_chart` draws an :class:`~aiops.alerting.notify.AlertWindow` as a PNG with
matplotlib's Agg backend (no display, no pyplot state, so it is safe in any thread):
the series as a line, the expected band shaded, and the points that scored at or above
the threshold marked in red. Times are UTC.
"""

from __future__ import annotations

import io
import math
from datetime import UTC, datetime

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter, date2num
from matplotlib.figure import Figure

from aiops.alerting.notify import AlertWindow

__all__ = ["CHART_DPI", "CHART_SIZE", "render_chart"]

#: Width and height of the chart in inches; at :data:`CHART_DPI` it is 800 x 300 pixels,
#: readable in Slack's preview without opening it.
CHART_SIZE = (8.0, 3.0)
CHART_DPI = 100
_LINE = "#1f77b4"
_BAND = "#9ecae1"
_ANOMALY = "#d62728"


def render_chart(window: AlertWindow, *, title: str = "") -> bytes:
    """The window as PNG bytes (800 x 300 pixels).

    >>> w = AlertWindow((0.0, 60.0, 120.0), (1.0, 1.2, 9.0), (0.5, 0.5, 0.5),
    ...                 (1.5, 1.5, 1.5), (False, False, True), 0.99)
    >>> render_chart(w, title="latency")[1:4]
    b'PNG'
    """
    fig = Figure(figsize=CHART_SIZE, dpi=CHART_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    stamps = [datetime.fromtimestamp(t, tz=UTC) for t in window.timestamps]
    times = date2num(stamps)  # type: ignore[no-untyped-call]
    if any(math.isfinite(v) for v in window.lo):
        ax.fill_between(
            times,
            window.lo,
            window.hi,
            color=_BAND,
            alpha=0.5,
            linewidth=0,
            label="expected band",
        )
    ax.plot(times, window.values, color=_LINE, linewidth=1.5, label="value")
    marked = np.asarray(window.anomalous, dtype=bool)
    if marked.any():
        ax.scatter(
            times[marked],
            np.asarray(window.values)[marked],
            color=_ANOMALY,
            s=28,
            zorder=3,
            label=_anomaly_label(window.threshold),
        )
    locator = AutoDateLocator(tz=UTC)  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator, tz=UTC))  # type: ignore[no-untyped-call]
    ax.set_xlabel("UTC")
    ax.grid(True, linewidth=0.3, alpha=0.6)
    ax.legend(loc="upper left", fontsize="small", framealpha=0.8)
    if title:
        ax.set_title(title, fontsize="medium", loc="left")
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=CHART_DPI)
    return out.getvalue()


def _anomaly_label(threshold: float) -> str:
    if math.isfinite(threshold):
        return f"score >= {threshold:g}"
    return "anomalous"
