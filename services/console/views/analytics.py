"""``/analytics``: per-tenant live window counts and spike alerts as charts;
``/bench``: each ``make bench`` figure over time, so a regression is seen, not read."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from schemas import AnalyticsAlert
from schemas.topics import TopicsFileError, topic_for
from services.console.analytics import bench_history, live_counts, recent_alerts
from services.console.charts import Series, line_chart
from services.console.web import SessionDep, render, resources_of, shown_errors

router = APIRouter()


def _alerts_topic(request: Request) -> str | None:
    configured = resources_of(request).config.alerts_topic
    if configured:
        return configured
    try:
        return topic_for(AnalyticsAlert)
    except TopicsFileError:
        return None


@router.get("/analytics", response_class=HTMLResponse)
def analytics_page(request: Request, session: SessionDep, hours: float = 6.0) -> HTMLResponse:
    resources = resources_of(request)
    charts = []
    alerts: list[AnalyticsAlert] = []
    with shown_errors() as problems:
        with resources.conn() as conn:
            counts = live_counts(conn, resources.schema, hours=min(max(hours, 0.1), 168))
        charts = [
            (tenant, line_chart(series, title=f"tenant {tenant}", unit="events / min"))
            for tenant, series in counts.items()
        ]
        topic = _alerts_topic(request)
        if topic:
            with resources.reader() as reader:
                alerts = recent_alerts(reader, topic)
    return render(
        request,
        "analytics.html",
        session,
        charts=charts,
        alerts=alerts,
        hours=hours,
        problems=problems,
        title="Live analytics",
    )


@router.get("/bench", response_class=HTMLResponse)
def bench_page(request: Request, session: SessionDep, quick: bool = False) -> HTMLResponse:
    resources = resources_of(request)
    figures = bench_history(resources.config.bench_dir, include_quick=quick)
    sections: dict[str, list[tuple[object, object]]] = {}
    for figure in figures:
        chart = line_chart(
            [Series(figure.name, figure.series.points)],
            title=figure.name,
            unit=figure.unit,
            width=420,
            height=160,
        )
        sections.setdefault(figure.section, []).append((figure, chart))
    return render(
        request,
        "bench.html",
        session,
        sections=sections,
        quick=quick,
        bench_dir=resources.config.bench_dir,
        title="Bench history",
    )
