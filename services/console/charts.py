"""Charts as inline SVG, drawn on the server: no chart library, no script, and they print.

:func:`sparkline` for a cell of a table; :func:`line_chart` for series over time (bench
figures, window counts), with the first and last value and the min/max labelled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from markupsafe import Markup, escape

__all__ = ["Series", "line_chart", "sparkline"]

_COLOURS = ("#2f5bd3", "#d92d20", "#079455", "#dc6803", "#7a5af8", "#0e9384", "#c11574")


def _points(
    xs: Sequence[float], ys: Sequence[float], box: tuple[float, float, float, float]
) -> str:
    left, top, width, height = box
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(0.0, min(ys)), max(ys)
    xspan = (x1 - x0) or 1.0
    yspan = (y1 - y0) or 1.0
    return " ".join(
        f"{left + (x - x0) / xspan * width:.1f},{top + height - (y - y0) / yspan * height:.1f}"
        for x, y in zip(xs, ys, strict=True)
    )


def sparkline(values: Sequence[float], *, width: int = 120, height: int = 24) -> Markup:
    """A small line of ``values`` (oldest first); empty for fewer than two."""
    if len(values) < 2:
        return Markup("")
    xs = [float(i) for i in range(len(values))]
    points = _points(xs, values, (1, 1, width - 2, height - 2))
    # Numbers only: nothing to escape.
    return Markup(  # noqa: S704
        f'<svg class="spark" width="{width}" height="{height}" viewBox="0 0 {width} {height}">'
        f'<polyline fill="none" stroke="#2f5bd3" stroke-width="1.5" points="{points}"/></svg>'
    )


@dataclass(frozen=True, slots=True)
class Series:
    """One named line: ``(x, y)`` points, x a Unix time in seconds."""

    name: str
    points: tuple[tuple[float, float], ...]


def _label(value: float) -> str:
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def line_chart(
    series: Sequence[Series], *, title: str, unit: str = "", width: int = 560, height: int = 180
) -> Markup:
    """Series over time in one chart, a legend under it; the y axis starts at zero so a
    drop is seen at its true size."""
    drawn = [s for s in series if s.points]
    if not drawn:
        return Markup(f'<p class="hint">{escape(title)}: no data yet</p>')  # noqa: S704 - escaped
    xs = [x for s in drawn for x, _ in s.points]
    ys = [y for s in drawn for _, y in s.points]
    box = (44.0, 22.0, width - 56.0, height - 60.0)
    low, high = min(0.0, min(ys)), max(ys)
    parts = [
        f'<svg class="chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}"'
        f' role="img" aria-label="{escape(title)}">',
        f'<text x="8" y="15" font-size="12" font-weight="600">{escape(title)}'
        f"{escape(f' ({unit})' if unit else '')}</text>",
        f'<text x="4" y="{box[1] + 8:.0f}" font-size="10">{escape(_label(high))}</text>',
        f'<text x="4" y="{box[1] + box[3]:.0f}" font-size="10">{escape(_label(low))}</text>',
        f'<line x1="{box[0]}" y1="{box[1] + box[3]}" x2="{box[0] + box[2]}"'
        f' y2="{box[1] + box[3]}" stroke="#d0d5dd"/>',
    ]
    for index, line in enumerate(drawn):
        colour = _COLOURS[index % len(_COLOURS)]
        # Every series is scaled on the shared axes, so lines compare.
        scaled = _points(
            [x for x, _ in line.points] + [min(xs), max(xs)],
            [y for _, y in line.points] + [low, high],
            box,
        ).split(" ")[: len(line.points)]
        if len(scaled) == 1:
            cx, cy = scaled[0].split(",")
            parts.append(f'<circle cx="{cx}" cy="{cy}" r="3" fill="{colour}"/>')
        else:
            parts.append(
                f'<polyline fill="none" stroke="{colour}" stroke-width="1.8"'
                f' points="{" ".join(scaled)}"/>'
            )
        legend_x = box[0] + index * 140
        parts.append(
            f'<text x="{legend_x:.0f}" y="{height - 6}" font-size="10" fill="{colour}">'
            f"{escape(line.name[:24])}: {escape(_label(line.points[-1][1]))}</text>"
        )
    first, last = min(xs), max(xs)
    for x, anchor in ((first, "start"), (last, "end")):
        stamp = datetime.fromtimestamp(x, UTC).strftime("%m-%d %H:%M")
        position = box[0] if anchor == "start" else box[0] + box[2]
        parts.append(
            f'<text x="{position:.0f}" y="{box[1] + box[3] + 12:.0f}" font-size="10"'
            f' text-anchor="{anchor}">{stamp}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every text piece above is escaped
