"""``/dead-letters``: every ``.dlq`` topic by error class; one topic's classes, samples
and redrive ledger; one letter decoded; redrive = a dry-run preview, then a confirmed
run — both :func:`consumers.ops.redrive_dead_letters`, as ``sidestream dlq redrive``.

Counts come from the console's background index (:class:`DeadLetterIndex`): a page never
reads a topic. While a topic is still being indexed its counts are shown as partial and
its table refreshes itself until complete. A redrive (preview and run) reads the topic
whole instead: a partial index never chooses what is sent."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from consumers.ops import (
    ErrorClassSummary,
    LetterFilter,
    RedriveReport,
    redrive_dead_letters,
    redrive_ledger,
)
from schemas import EventDeserializer
from services.console.access import Session
from services.console.dead_letters import (
    IndexView,
    decode_value,
    dlq_topics,
    header_rows,
    letter_at,
)
from services.console.web import (
    Form,
    SessionDep,
    first,
    in_thread,
    operator_form,
    render,
    resources_of,
    shown_errors,
)

router = APIRouter()

_deserializer = EventDeserializer()


def _known(request: Request, dlq: str) -> str:
    """Only the dead-letter topics of the console's pipelines can be read or redriven."""
    if dlq not in {topic for _, topic in dlq_topics(resources_of(request).config.pipelines)}:
        raise HTTPException(status_code=404, detail=f"{dlq} is not a dead-letter topic of a sink")
    return dlq


def _summary(request: Request, dlq: str, samples: int) -> tuple[list[ErrorClassSummary], IndexView]:
    """``dlq`` by error class from the console's index: complete, or partial while the
    index is still reading the topic (the view says which). Never reads the topic."""
    resources = resources_of(request)
    with resources.conn() as conn:
        redriven = resources.redriven(conn, dlq)
    index = resources.dead_letters.view(dlq, redriven=redriven, samples=samples)
    return index.summary, index


def _index_problems(index: IndexView | None, problems: list[str]) -> None:
    if index is not None and index.error is not None:
        problems.append(f"indexing {index.dlq_topic}: {index.error}")


def _overview_topics(request: Request) -> list[dict[str, Any]]:
    resources = resources_of(request)
    topics: list[dict[str, Any]] = []
    for pipeline, dlq in dlq_topics(resources.config.pipelines):
        summary: list[ErrorClassSummary] = []
        index: IndexView | None = None
        with shown_errors() as problems:
            summary, index = _summary(request, dlq, samples=0)
        _index_problems(index, problems)
        topics.append(
            {
                "pipeline": pipeline,
                "dlq": dlq,
                "summary": summary,
                "problems": problems,
                "index": index,
            }
        )
    return topics


def _indexing(topics: list[dict[str, Any]]) -> bool:
    return any(t["index"] is not None and not t["index"].complete for t in topics)


@router.get("/dead-letters", response_class=HTMLResponse)
def overview(request: Request, session: SessionDep) -> HTMLResponse:
    topics = _overview_topics(request)
    return render(
        request,
        "dead_letters.html",
        session,
        topics=topics,
        indexing=_indexing(topics),
        title="Dead letters",
    )


@router.get("/dead-letters/table", response_class=HTMLResponse)
def overview_table(request: Request, session: SessionDep) -> HTMLResponse:
    """The overview's table alone: what the page refreshes while a topic is indexed."""
    topics = _overview_topics(request)
    return render(
        request, "_dead_letters_table.html", session, topics=topics, indexing=_indexing(topics)
    )


def _topic_page(
    request: Request,
    session: Session,
    dlq: str,
    *,
    preview: RedriveReport | None = None,
    form: Form | None = None,
    status_code: int = 200,
    template: str = "dead_letter_topic.html",
) -> HTMLResponse:
    resources = resources_of(request)
    summary: list[ErrorClassSummary] = []
    index: IndexView | None = None
    ledger = []
    with shown_errors() as problems:
        with resources.conn() as conn:
            ledger = redrive_ledger(conn, resources.schema, dlq, limit=resources.config.page_size)
        summary, index = _summary(request, dlq, samples=5)
    _index_problems(index, problems)
    return render(
        request,
        template,
        session,
        status_code=status_code,
        dlq=dlq,
        summary=summary,
        index=index,
        ledger=ledger,
        problems=problems,
        preview=preview,
        chosen=form or {},
        max_redrives=resources.config.max_redrives,
        title=f"Dead letters · {dlq}",
    )


@router.get("/dead-letters/{dlq}", response_class=HTMLResponse)
def topic_page(request: Request, session: SessionDep, dlq: str) -> HTMLResponse:
    return _topic_page(request, session, _known(request, dlq))


@router.get("/dead-letters/{dlq}/classes", response_class=HTMLResponse)
def topic_classes(request: Request, session: SessionDep, dlq: str) -> HTMLResponse:
    """The topic page's error classes alone: what the page refreshes while indexing."""
    return _topic_page(request, session, _known(request, dlq), template="_dlq_classes.html")


@router.get("/dead-letters/{dlq}/{partition}/{offset}", response_class=HTMLResponse)
def letter_page(
    request: Request, session: SessionDep, dlq: str, partition: int, offset: int
) -> HTMLResponse:
    resources = resources_of(request)
    letter = decoded = None
    with shown_errors() as problems, resources.reader() as reader:
        letter = letter_at(reader, _known(request, dlq), partition, offset)
        decoded = decode_value(_deserializer, letter.value, letter.source_topic)
    return render(
        request,
        "dead_letter.html",
        session,
        dlq=dlq,
        letter=letter,
        decoded=decoded,
        headers=header_rows(letter) if letter else [],
        key=(letter.key or b"").decode("utf-8", "replace") if letter else "",
        problems=problems,
        title=f"{dlq}[{partition}]@{offset}",
    )


def _letter_filter(form: Form) -> LetterFilter:
    return LetterFilter.parse(
        error_classes=form.get("error_class", []),
        since=first(form, "since") or None,
        until=first(form, "until") or None,
        offsets=[o.strip() for o in first(form, "offsets").split(",") if o.strip()],
    )


def _describe(letter_filter: LetterFilter) -> str:
    parts = []
    if letter_filter.error_classes:
        parts.append("classes " + ", ".join(sorted(letter_filter.error_classes)))
    if letter_filter.since:
        parts.append(f"since {letter_filter.since:%Y-%m-%d %H:%M:%S}")
    if letter_filter.until:
        parts.append(f"until {letter_filter.until:%Y-%m-%d %H:%M:%S}")
    if letter_filter.offsets:
        parts.append(
            "offsets "
            + ", ".join(f"{r.partition}:{r.first}-{r.last}" for r in letter_filter.offsets)
        )
    return "; ".join(parts) or "every dead letter"


def _redrive(
    request: Request, session: Session, dlq: str, form: Form, *, dry_run: bool
) -> RedriveReport:
    resources = resources_of(request)
    letter_filter = _letter_filter(form)
    with (
        resources.conn() as conn,
        resources.reader() as reader,
        resources.producer("redrive") as producer,
    ):
        return redrive_dead_letters(
            conn=conn,
            reader=reader,
            producer=producer,
            schema=resources.schema,
            dlq_topic=dlq,
            letter_filter=letter_filter,
            max_redrives=resources.config.max_redrives,
            dry_run=dry_run,
            operator=f"console:{session.principal.name}",
        )


@router.post("/dead-letters/{dlq}/preview", response_class=HTMLResponse)
async def preview(request: Request, dlq: str) -> HTMLResponse:
    session, form = await operator_form(request)
    _known(request, dlq)

    def run() -> HTMLResponse:
        report = None
        with shown_errors() as problems:
            report = _redrive(request, session, dlq, form, dry_run=True)
        if problems:
            session.flashes.extend(problems)
        return _topic_page(request, session, dlq, preview=report, form=form)

    return await in_thread(run)


@router.post("/dead-letters/{dlq}/redrive")
async def redrive(request: Request, dlq: str) -> Response:
    session, form = await operator_form(request)
    _known(request, dlq)
    if first(form, "confirm") != "yes":
        raise HTTPException(status_code=400, detail="a redrive needs the preview's confirmation")

    def run() -> Response:
        resources = resources_of(request)
        report = None
        with shown_errors() as problems:
            report = _redrive(request, session, dlq, form, dry_run=False)
        selection = _describe(_letter_filter(form)) if not problems else first(form, "error_class")
        resources.audit.record(
            actor=session.principal.name,
            action="dlq.redrive",
            resource_type="dlq_topic",
            resource_id=dlq,
            succeeded=report is not None,
            ip=request.client.host if request.client else None,
            details={
                "selection": selection,
                "redriven": len(report.redriven) if report else 0,
                "error": "; ".join(problems),
            },
        )
        if report is None:
            session.flashes.append("redrive failed: " + "; ".join(problems))
        else:
            session.flashes.append(
                f"{dlq}: redrove {len(report.redriven):,} ({selection}); skipped "
                f"{len(report.already_redriven):,} already redriven, {len(report.repeats):,} "
                f"repeats, {len(report.at_cap):,} at the redrive cap"
            )
        return RedirectResponse(f"/dead-letters/{dlq}", status_code=303)

    return await in_thread(run)
