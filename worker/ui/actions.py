"""The dashboard's actions (admin sessions only): retry, retry all failed matching a filter, retry a
failure group, promote, cancel, remove, clean, pause / resume, set / disable a schedule.

Every action is a POST carrying the session's CSRF token. The first POST renders a confirmation
page that says exactly what will happen (how many jobs, which filter); only its "confirm" button,
which posts the same fields with ``confirmed=1``, acts. That works with JavaScript off, and keeps
the page free of inline script. The work itself is :class:`worker.operations.Operations`'.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import APIRouter, Request
from pydantic import ValidationError
from starlette.responses import RedirectResponse, Response

from worker.errors import InvalidJobData, JobNotFound, WrongState
from worker.models import ScheduleConfig, State
from worker.operations import CLEAN_STATES
from worker.schedules import ScheduleRequest
from worker.ui.failures import group_ids
from worker.ui.routes import Dashboard, form_of, job_filter, safe_next
from worker.ui.sessions import FLASH_COOKIE, Session, set_cookie

Form = dict[str, str]
Step = Callable[[Dashboard, Form], Awaitable[str]]
#: Form fields that are the action's own plumbing, not its arguments.
PLUMBING = ("csrf", "confirmed")
#: The oldest age ``clean`` takes (100 years): beyond it (or inf / nan) the form is refused.
MAX_CLEAN_HOURS = 876_000
FILTER_LABELS = {
    "connector": "connector", "connectorId": "connectorId", "orgId": "orgId", "after": "created after",
    "before": "created before", "q": "data contains",
}  # fmt: skip


@dataclass(frozen=True)
class Action:
    """One action: what the confirmation page says, what confirming does, where to go after."""

    label: str
    describe: Step
    perform: Step
    back: str = "/ui/"


def _job(form: Form) -> str:
    job_id = form.get("id", "")
    if not job_id:
        raise ValueError("no job id given")
    return job_id


def _filter_text(form: Form) -> str:
    parts = [f"{label} = {form[key]!r}" for key, label in FILTER_LABELS.items() if form.get(key)]
    return ", ".join(parts) if parts else "no filter: every failed job"


async def _retry_failed_describe(dash: Dashboard, form: Form) -> str:
    flt = job_filter({**form, "state": State.FAILED.value})
    total = (await dash.ops.page(flt, limit=1, offset=0)).total
    return f"Retry {total} failed job(s) matching {_filter_text(form)}."


async def _retry_failed(dash: Dashboard, form: Form) -> str:
    ids = await dash.ops.retry_failed(job_filter({**form, "state": ""}))
    return f"Retried {len(ids)} failed job(s) matching {_filter_text(form)}."


async def _group_describe(dash: Dashboard, form: Form) -> str:
    ids = await group_ids(dash.client, dash.keys, form.get("error_class", ""), form.get("pattern", ""))
    return f"Retry {len(ids)} failed job(s) with {form.get('error_class')}: {form.get('pattern')}"


async def _group(dash: Dashboard, form: Form) -> str:
    ids = await group_ids(dash.client, dash.keys, form.get("error_class", ""), form.get("pattern", ""))
    done = await dash.ops.retry_many(ids)
    return f"Retried {len(done)} failed job(s) with {form.get('error_class')}."


def _clean_args(form: Form) -> tuple[str, int, int]:
    state = form.get("state", "")
    if state not in CLEAN_STATES:
        raise ValueError(f"cannot clean state {state!r} (one of {', '.join(CLEAN_STATES)})")
    hours = float(form.get("older_than_hours") or 0)
    limit = int(form.get("limit") or 1000)
    if not 0 <= hours <= MAX_CLEAN_HOURS or not 1 <= limit <= 100_000:  # false for nan too
        raise ValueError(f"older than must be 0-{MAX_CLEAN_HOURS} hours and limit 1-100000")
    return state, int(hours * 3_600_000), limit


async def _clean(dash: Dashboard, form: Form) -> str:
    state, older_ms, limit = _clean_args(form)
    return f"Deleted {len(await dash.ops.clean(state, older_ms, limit))} {state} job(s)."


async def _clean_describe(_: Dashboard, form: Form) -> str:
    state, older_ms, limit = _clean_args(form)
    return f"Delete up to {limit} {state} job(s) older than {older_ms / 3_600_000:g} hour(s). This cannot be undone."


def _schedule_request(form: Form) -> ScheduleRequest:
    config: dict[str, object] = {"scheduleType": form.get("scheduleType", ""), "isEnabled": True}
    for key in ("hour", "minute", "interval", "dayOfMonth"):
        if form.get(key, "").strip():
            config[key] = form[key].strip()
    if form.get("daysOfWeek", "").strip():
        config["daysOfWeek"] = [d.strip() for d in form["daysOfWeek"].split(",") if d.strip()]
    for key in ("cronExpression", "timezone"):
        if form.get(key, "").strip():
            config[key] = form[key].strip()
    return ScheduleRequest(
        connector=form.get("connector", ""),
        connector_id=form.get("connectorId", ""),
        org_id=form.get("orgId", ""),
        user_id=form.get("userId", ""),
        schedule_config=ScheduleConfig.model_validate(config),
    )


async def _schedule_describe(_: Dashboard, form: Form) -> str:
    req = _schedule_request(form)
    cfg = json.dumps(req.schedule_config.model_dump(by_alias=True, exclude_none=True))
    return f"Schedule {req.connector}/{req.connector_id} (org {req.org_id}) with {cfg}."


async def _schedule(dash: Dashboard, form: Form) -> str:
    result = await dash.ops.upsert_schedule(_schedule_request(form))
    return f"Schedule {result['id']}: {result.get('pattern', 'removed')} {result.get('tz', '')}".strip()


async def _unschedule(dash: Dashboard, form: Form) -> str:
    removed = await dash.ops.remove_schedule(form.get("connector", ""), form.get("connectorId", ""))
    return f"Schedule of {form.get('connectorId')} " + ("removed." if removed else "did not exist.")


async def _retry(dash: Dashboard, form: Form) -> str:
    return f"Job {(await dash.ops.retry(_job(form))).id} is waiting again."


async def _promote(dash: Dashboard, form: Form) -> str:
    return f"Job {(await dash.ops.promote(_job(form))).id} runs now."


async def _remove(dash: Dashboard, form: Form) -> str:
    await dash.ops.remove(_job(form))
    return f"Job {_job(form)} removed."


async def _cancel(dash: Dashboard, form: Form) -> str:
    discard = form.get("discard") == "1"
    result = await dash.ops.cancel(_job(form), by="dashboard", discard_checkpoint=discard)
    if result.done == "failed":
        return f"Job {result.id} was {result.state}: failed now, cancelled by dashboard."
    return f"Job {result.id} is running: its worker stops it within seconds and fails it, cancelled by dashboard."


def _cancel_text(form: Form) -> str:
    keep = "discarded: the next run starts fresh" if form.get("discard") == "1" else "kept: the next run resumes"
    return f"Cancel job {_job(form)}: it fails without retries; its checkpoint is {keep}."


def _says(text: Callable[[Form], str]) -> Step:
    async def describe(_: Dashboard, form: Form) -> str:
        return text(form)

    return describe


async def _pause(dash: Dashboard, _: Form) -> str:
    await dash.ops.pause()
    return "Queue paused: workers finish their active jobs and take no new ones."


async def _resume(dash: Dashboard, _: Form) -> str:
    await dash.ops.resume()
    return "Queue resumed."


ACTIONS = {
    "retry": Action("Retry", _says(lambda f: f"Retry failed job {_job(f)} (it goes back to waiting)."), _retry),
    "promote": Action("Run now", _says(lambda f: f"Run delayed job {_job(f)} now."), _promote),
    "cancel": Action("Cancel job", _says(_cancel_text), _cancel),
    "remove": Action("Remove", _says(lambda f: f"Remove job {_job(f)} and its logs for good."), _remove, "/ui/jobs"),
    "retry-failed": Action("Retry all matching", _retry_failed_describe, _retry_failed, "/ui/jobs?state=failed"),
    "retry-group": Action("Retry these", _group_describe, _group, "/ui/failures"),
    "clean": Action("Clean", _clean_describe, _clean),
    "pause": Action("Pause queue", _says(lambda _: "Pause the queue for every worker."), _pause),
    "resume": Action("Resume queue", _says(lambda _: "Resume the queue."), _resume),
    "schedule-set": Action("Save schedule", _schedule_describe, _schedule, "/ui/instances"),
    "schedule-disable": Action(
        "Disable schedule",
        _says(lambda f: f"Remove the schedule of {f.get('connectorId')}."),
        _unschedule,
        "/ui/instances",
    ),
}


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    return origin is None or origin == f"{request.url.scheme}://{request.url.netloc}"


def _refusal(dash: Dashboard, request: Request, session: Session | None, form: Form | None) -> Response | None:
    """Why this POST may not act, as an error page (None: it may)."""
    if session is None:
        return dash.error(401, "sign in first")
    if form is None:
        return dash.error(413, "form too large", session)
    if not dash.signer.csrf_ok(session, form.get("csrf")) or not _same_origin(request):
        return dash.error(403, "missing or wrong CSRF token", session)
    if not session.admin:
        return dash.error(403, "this session is read-only (signed in with the read token)", session)
    return None


async def _confirm_or_act(dash: Dashboard, request: Request, session: Session, action: Action, form: Form) -> Response:
    back = safe_next(form.get("back"), action.back)
    try:
        if form.get("confirmed") != "1":
            fields = {k: v for k, v in form.items() if k not in PLUMBING}
            description = await action.describe(dash, form)
            ctx = await dash.context(request, session, action=action, description=description, fields=fields)
            return dash.page(request, "confirm.html", {**ctx, "back": back, "target": request.url.path})
        message = await action.perform(dash, form)
    except JobNotFound as exc:
        return dash.error(404, str(exc), session)
    except WrongState as exc:
        return dash.error(409, str(exc), session)
    except (ValueError, ValidationError, InvalidJobData) as exc:
        return dash.error(422, str(exc), session)
    response = RedirectResponse(back, status_code=303)
    set_cookie(response, request, FLASH_COOKIE, dash.signer.flash(session, message), max_age=60)
    return response


def build_actions(dash: Dashboard) -> APIRouter:
    """``POST /ui/actions/<name>``: confirm, then act (admin session and CSRF token required)."""
    router = APIRouter(include_in_schema=False)

    @router.post("/ui/actions/{name}")
    async def act(request: Request, name: str) -> Response:
        session = await dash.signed_in(request)
        try:
            form: Form | None = await form_of(request)
        except ValueError:
            form = None
        refused = _refusal(dash, request, session, form)
        if refused is not None or session is None or form is None:
            return refused or dash.error(400, "bad request")
        action = ACTIONS.get(name)
        if action is None:
            return dash.error(404, f"no action {name!r}", session)
        return await _confirm_or_act(dash, request, session, action, form)

    return router
