"""``/replay``: pick a sink and a start, see the per-partition plan (the same as
``sidestream replay --dry-run``), run it with a rate limit and a live progress bar, stop
it, resume it."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from consumers.ops import ReplayPlan, start_at
from services.console.pipelines import Pipeline
from services.console.replays import (
    ReplayJob,
    ReplayJobs,
    ReplayRequest,
    compare_shadow,
    plan_for,
)
from services.console.web import (
    SessionDep,
    in_thread,
    operator_form,
    render,
    resources_of,
    shown_errors,
)

router = APIRouter()


def jobs_of(request: Request) -> ReplayJobs:
    jobs: ReplayJobs = request.app.state.replays
    return jobs


def _partitions(text: str) -> tuple[int, ...] | None:
    if not text.strip():
        return None
    try:
        return tuple(sorted({int(part) for part in text.split(",") if part.strip()}))
    except ValueError:
        raise ValueError(f"partitions {text!r}: expected e.g. 0,2,5") from None


def _pipeline(request: Request, name: str | None) -> Pipeline:
    for pipeline in resources_of(request).config.pipelines:
        if pipeline.name == name and pipeline.replayable:
            return pipeline
    raise ValueError(f"choose one of the sinks: {', '.join(_sinks(request))}")


def _sinks(request: Request) -> list[str]:
    return [p.name for p in resources_of(request).config.pipelines if p.replayable]


def _request_from(
    pipeline: Pipeline, fields: dict[str, str], *, resume: bool = False
) -> ReplayRequest:
    """A replay request from the form's fields (the same choices as the CLI's options)."""
    assert pipeline.sink is not None  # replayable pipelines name their sink
    how = fields.get("start", "time")
    rate_text = fields.get("rate", "").strip()
    start = None
    if not resume:
        start = start_at(
            from_time=fields.get("from_time", "").strip() or None if how == "time" else None,
            to_offset=fields.get("to_offset", "").strip() or None if how == "offset" else None,
            from_beginning=how == "beginning",
        )
    return ReplayRequest(
        sink=pipeline.sink,
        start=start,
        group=pipeline.group,
        topic=pipeline.topics[0],
        partitions=_partitions(fields.get("partitions", "")),
        shadow=fields.get("shadow", "").strip() or None,
        rate=float(rate_text) if rate_text else None,
    )


@router.get("/replay", response_class=HTMLResponse)
def replay_page(request: Request, session: SessionDep) -> HTMLResponse:
    resources = resources_of(request)
    fields = dict(request.query_params)
    plan: ReplayPlan | None = None
    with shown_errors() as problems:
        if fields.get("sink"):
            replay = _request_from(_pipeline(request, fields["sink"]), fields)
            with resources.conn() as conn, resources.reader() as reader:
                plan = plan_for(
                    replay,
                    conn=conn,
                    reader=reader,
                    groups=resources.groups,
                    live_schema=resources.schema,
                )
    return render(
        request,
        "replay.html",
        session,
        sinks=_sinks(request),
        fields=fields,
        plan=plan,
        problems=problems,
        jobs=jobs_of(request).recent(),
        title="Replay",
    )


@router.get("/replay/compare", response_class=HTMLResponse)
def compare_page(request: Request, session: SessionDep, sink: str, shadow: str) -> HTMLResponse:
    """The live table beside a shadow replay's copy (rows per partition, a sample diff)."""
    resources = resources_of(request)
    comparison = None
    with shown_errors() as problems:
        pipeline = _pipeline(request, sink)
        with resources.conn() as conn:
            comparison = compare_shadow(
                conn, table=pipeline.target, live_schema=resources.schema, shadow_schema=shadow
            )
    return render(
        request,
        "replay_compare.html",
        session,
        comparison=comparison,
        problems=problems,
        title=f"Shadow {shadow} beside {resources.schema}",
    )


@router.post("/replay/run")
async def run(request: Request) -> Response:
    session, form = await operator_form(request)
    fields = {name: values[0] for name, values in form.items() if values}
    resume = fields.get("resume") == "1"
    try:
        pipeline = _pipeline(request, fields.get("sink"))
        replay = _request_from(pipeline, fields, resume=resume)
        job = jobs_of(request).start(
            replay, started_by=session.principal.name, pipeline=pipeline.name
        )
    except ValueError as exc:
        session.flashes.append(f"replay not started: {exc}")
        return RedirectResponse("/replay", status_code=303)
    return RedirectResponse(f"/replay/jobs/{job.id}", status_code=303)


def _job(request: Request, job_id: str) -> ReplayJob:
    job = jobs_of(request).get(job_id)
    if job is None:
        raise HTTPException(status_code=404, detail=f"no replay {job_id} (the console restarted?)")
    return job


@router.get("/replay/jobs/{job_id}", response_class=HTMLResponse)
def job_page(request: Request, session: SessionDep, job_id: str) -> HTMLResponse:
    job = _job(request, job_id)
    return render(request, "replay_job.html", session, job=job, title=f"Replay {job.id}")


@router.get("/replay/jobs/{job_id}/progress", response_class=HTMLResponse)
def job_progress(request: Request, session: SessionDep, job_id: str) -> HTMLResponse:
    return render(request, "_replay_progress.html", session, job=_job(request, job_id))


@router.post("/replay/jobs/{job_id}/stop")
async def stop(request: Request, job_id: str) -> Response:
    session, _form = await operator_form(request)
    job = _job(request, job_id)
    job.stop.set()
    session.flashes.append(f"replay {job.id}: stopping after the batch in hand")
    await in_thread(
        lambda: resources_of(request).audit.record(
            actor=session.principal.name,
            action="replay.stop",
            resource_type="consumer_group",
            resource_id=job.group,
            succeeded=True,
            ip=request.client.host if request.client else None,
            details={"job": job.id},
        )
    )
    return RedirectResponse(f"/replay/jobs/{job.id}", status_code=303)
