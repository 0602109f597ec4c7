"""``/`` and ``/pipelines``: every worker with its lag, throughput and health; the table
refreshes itself (``/pipelines/table`` every few seconds)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from consumers.ops import LagReport, measure_lag
from consumers.ops.positions import has_table
from services.console.access import Session
from services.console.pipelines import PipelineStatus, pipeline_statuses
from services.console.web import SessionDep, render, resources_of, shown_errors

router = APIRouter()


def _statuses(request: Request) -> tuple[list[PipelineStatus], LagReport | None, list[str]]:
    resources = resources_of(request)
    pipelines = resources.config.pipelines
    report = None
    with shown_errors() as problems:
        groups = [p.group for p in pipelines if p.group]
        with resources.conn() as conn:
            if not has_table(conn, resources.schema, "consumer_offsets"):
                raise ValueError(
                    f"no consumer_offsets table in schema {resources.schema}: "
                    "run `sidestream db migrate`"
                )
            with resources.reader() as reader:
                report = measure_lag(
                    conn=conn,
                    schema=resources.schema,
                    reader=reader,
                    groups=resources.groups,
                    group_ids=groups,
                )
    probes = resources.scraper.probes()
    return pipeline_statuses(pipelines, report, probes), report, problems


@router.get("/", include_in_schema=False)
def home() -> RedirectResponse:
    return RedirectResponse("/pipelines", status_code=303)


@router.get("/pipelines", response_class=HTMLResponse)
def pipelines_page(request: Request, session: SessionDep) -> HTMLResponse:
    return _page(request, session, "pipelines.html")


@router.get("/pipelines/table", response_class=HTMLResponse)
def pipelines_table(request: Request, session: SessionDep) -> HTMLResponse:
    return _page(request, session, "_pipelines_table.html")


def _page(request: Request, session: Session, template: str) -> HTMLResponse:
    statuses, report, problems = _statuses(request)
    return render(
        request,
        template,
        session,
        statuses=statuses,
        report=report,
        problems=problems,
        title="Pipelines",
    )
