"""``/schemas``: subjects, versions, rules and the versions seen on their topics;
``/schemas/{subject}``: every version, and a side-by-side diff of two."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from markupsafe import Markup

from consumers.ops import OpsError
from schemas import SchemaError, SchemaVersion, default_catalog
from services.console.schema_usage import (
    VersionUsage,
    diff_table,
    subjects,
    topics_of,
    versions_on,
)
from services.console.web import SessionDep, render, resources_of, shown_errors

router = APIRouter()


def _usage(request: Request, subject: str) -> list[VersionUsage]:
    resources = resources_of(request)
    found = []
    for topic in topics_of(subject, resources.config.pipelines):

        def read(topic: str = topic) -> VersionUsage:
            with resources.reader() as reader:
                return versions_on(reader, default_catalog(), topic)

        try:
            # "Recently" by nature: a minute-old answer serves, and spares the broker.
            found.append(resources.cached(f"versions-on:{topic}", 60.0, read))
        except OpsError as exc:
            found.append(VersionUsage(topic, 0, {}, error=str(exc)))
    return found


@router.get("/schemas", response_class=HTMLResponse)
def schemas_page(request: Request, session: SessionDep) -> HTMLResponse:
    catalog = default_catalog()
    rows = [(info, _usage(request, info.subject)) for info in subjects(catalog)]
    return render(request, "schemas.html", session, rows=rows, title="Schemas")


@router.get("/schemas/{subject}", response_class=HTMLResponse)
def subject_page(
    request: Request,
    session: SessionDep,
    subject: str,
    old: int | None = None,
    new: int | None = None,
) -> HTMLResponse:
    catalog = default_catalog()
    table = None
    versions: tuple[SchemaVersion, ...] = ()
    with shown_errors() as problems:
        try:
            versions = catalog.versions(subject)
        except SchemaError as exc:
            raise ValueError(str(exc)) from None
        numbers = [v.version for v in versions]
        new = new or numbers[-1]
        old = old or (numbers[-2] if len(numbers) > 1 else numbers[-1])
        try:
            table = Markup(diff_table(catalog, subject, old, new))  # noqa: S704 - HtmlDiff escapes
        except SchemaError as exc:
            raise ValueError(str(exc)) from None
    return render(
        request,
        "schema.html",
        session,
        subject=subject,
        versions=versions,
        old=old,
        new=new,
        diff=table,
        problems=problems,
        title=f"Schema {subject}",
    )
