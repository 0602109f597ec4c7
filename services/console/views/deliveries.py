"""``/deliveries``: notifications by status, one notification's attempt history, retry
failed ones (``sidestream notifications retry``), and each destination's recent
latencies and circuit state."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from consumers.delivery.admin import (
    STATUSES,
    AttemptInfo,
    NotificationInfo,
    destination_health,
    list_notifications,
    notification_attempts,
    notification_counts,
    retry_failed,
)
from services.console.charts import sparkline
from services.console.web import (
    SessionDep,
    in_thread,
    operator_form,
    render,
    resources_of,
    shown_errors,
)

router = APIRouter()


@router.get("/deliveries", response_class=HTMLResponse)
def deliveries_page(
    request: Request, session: SessionDep, status: str | None = None
) -> HTMLResponse:
    resources = resources_of(request)
    counts: dict[str, int] = {}
    rows = []
    health = []
    with shown_errors() as problems, resources.conn() as conn:
        counts = notification_counts(conn)
        rows = list_notifications(conn, status or None, limit=resources.config.page_size)
        health = destination_health(conn)
    open_circuits = sum(
        probe.open_circuits for probes in resources.scraper.probes().values() for probe in probes
    )
    return render(
        request,
        "deliveries.html",
        session,
        counts=counts,
        statuses=STATUSES,
        status=status or "",
        rows=rows,
        health=health,
        threshold=resources.settings.delivery_circuit_failure_threshold,
        open_circuits=open_circuits,
        sparkline=sparkline,
        problems=problems,
        title="Deliveries",
    )


@router.get("/deliveries/{notification_id}", response_class=HTMLResponse)
def notification_page(request: Request, session: SessionDep, notification_id: str) -> HTMLResponse:
    resources = resources_of(request)
    found: NotificationInfo | None = None
    attempts: list[AttemptInfo] = []
    with shown_errors() as problems, resources.conn() as conn:
        found, attempts = notification_attempts(conn, notification_id)
        if found is None:
            raise ValueError(f"no notification {notification_id}")
    return render(
        request,
        "delivery.html",
        session,
        notification=found,
        attempts=attempts,
        problems=problems,
        title=f"Notification {notification_id}",
    )


@router.post("/deliveries/retry")
async def retry(request: Request) -> Response:
    session, form = await operator_form(request)
    ids = form.get("notification_id", [])
    everything = "all" in form.get("scope", [])

    def run() -> Response:
        resources = resources_of(request)
        changed = None
        with shown_errors() as problems, resources.conn() as conn:
            changed = retry_failed(conn, "all" if everything else ids)
        resources.audit.record(
            actor=session.principal.name,
            action="notifications.retry",
            resource_type="notifications",
            resource_id="all failed" if everything else ",".join(ids)[:500],
            succeeded=changed is not None,
            ip=request.client.host if request.client else None,
            details={"requeued": changed or 0, "error": "; ".join(problems)},
        )
        session.flashes.append(
            f"re-queued {changed} failed notification(s)"
            if changed is not None
            else "retry failed: " + "; ".join(problems)
        )
        return RedirectResponse("/deliveries?status=pending", status_code=303)

    return await in_thread(run)
