"""The dashboard's pages under ``/ui/``: sign-in, overview, jobs, job detail, connector instances,
failures, and the live event stream. Actions (POST) are in :mod:`worker.ui.actions`.

Every page is rendered on the server (readable with JavaScript off); ``static/app.js`` only adds
live updates from ``/ui/events``. Pages need a session (sign-in with the read or admin token).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import parse_qsl, quote, urlencode

from fastapi import APIRouter, Query, Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response, StreamingResponse

from worker.auth import role_of
from worker.catalog import Catalog
from worker.connections import RedisClient, make_client
from worker.errors import ConfigError
from worker.jobs import JobFilter, JobPage, current_counts
from worker.models import State
from worker.operations import Operations
from worker.settings import Settings
from worker.stats import Period
from worker.status import get_logs, get_status
from worker.throttle import FailureBudget
from worker.ui import events
from worker.ui.detail import RAW_FIELDS, read_detail, read_raw
from worker.ui.failures import SCAN_LIMIT, breakdown
from worker.ui.instances import read_instances
from worker.ui.render import Renderer, secure_headers, utf8
from worker.ui.sessions import (
    FLASH_COOKIE,
    LOGIN_COOKIE,
    LOGIN_TTL_S,
    SESSION_COOKIE,
    SESSION_TTL_S,
    Revocations,
    Session,
    Signer,
    clear_cookie,
    set_cookie,
)

PER_PAGE = (20, 50, 100)
INSTANCES_PER_PAGE = 100
PERIODS = ((Period.H1, "last hour", 1), (Period.H24, "last day", 24), (Period.D30, "last 30 days", 720))


def client_address(request: Request) -> str:
    """The client's address (a proxy's ``X-Forwarded-For`` only when uvicorn trusts that proxy)."""
    return request.client.host if request.client else "unknown"


def safe_next(target: str | None, default: str = "/ui/") -> str:
    """A redirect target inside the dashboard (never another site)."""
    if target and target.startswith("/ui/") and not target.startswith("//") and "\\" not in target:
        return target
    return default


def parse_time(value: str | None, field: str) -> datetime | None:
    """An ISO date or date-time from a form (UTC when no offset is given); ValueError names the field."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{field}: {value!r} is not a date or date-time (YYYY-MM-DDTHH:MM)") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def job_filter(params: dict[str, str]) -> JobFilter:
    """The JobFilter of a jobs page's or an action's fields (ValueError on a bad value)."""
    state = params.get("state") or None
    if state not in (None, *State.__members__.values()):
        raise ValueError(f"state: unknown state {state!r}")
    return JobFilter(
        state=State(state) if state else None,
        connector=params.get("connector") or None,
        connector_id=params.get("connectorId") or None,
        org_id=params.get("orgId") or None,
        created_after=parse_time(params.get("after"), "created after"),
        created_before=parse_time(params.get("before"), "created before"),
        text=params.get("q") or None,
    )


FILTER_FIELDS = ("state", "id", "connector", "connectorId", "orgId", "after", "before", "q")


class Dashboard:
    """The dashboard of one queue, sharing the API's settings, Redis client and operations."""

    def __init__(self, settings: Settings, client: RedisClient, ops: Operations) -> None:
        self.settings = settings
        self.client = client
        self.ops = ops
        self.keys = ops.keys
        self.signer = Signer(settings)
        self.revocations = Revocations(client, self.keys)
        self.budget = FailureBudget(client, self.keys, settings)
        self.render = Renderer()
        # live streams: one XREAD of their own, never a connection of the API's pool
        self.hub = events.Hub(lambda: make_client(settings, max_connections=2, bounded_reads=False), self.keys)
        self._catalog: Catalog | None = None

    async def aclose(self) -> None:
        """End the live streams and close their connection."""
        await self.hub.aclose()

    def catalog(self) -> Catalog | None:
        """The catalog (re-read when it changes); None when it cannot be read."""
        if self._catalog is None:
            try:
                self._catalog = Catalog.load(self.settings.catalog_file)
            except ConfigError:
                return None
        return self._catalog

    def session(self, request: Request) -> Session | None:
        """The session ``request``'s cookie proves (signature and expiry only: for error pages)."""
        return self.signer.session(request.cookies.get(SESSION_COOKIE))

    async def signed_in(self, request: Request) -> Session | None:
        """The signed-in session of ``request``, if any and not signed out."""
        session = self.session(request)
        if session is None or await self.revocations.revoked(session):
            return None
        return session

    async def context(self, request: Request, session: Session, **values: Any) -> dict[str, Any]:
        """What every page's template gets: queue, session, flash message, live-updates URL.

        Live updates start at the events stream position read *before* the page read any state
        (:func:`build_router`'s guard), so nothing that happens while the page renders is missed.
        """
        since = getattr(request.state, "events_since", None) or await events.last_id(self.client, self.keys)
        return {
            "queue": self.keys.queue,
            "session": session,
            "flash": self.signer.read_flash(session, request.cookies.get(FLASH_COOKIE)),
            "events_url": f"/ui/events?since={since}",
            "path": request.url.path + (f"?{request.url.query}" if request.url.query else ""),
            **values,
        }

    def page(self, request: Request, template: str, context: dict[str, Any], status: int = 200) -> Response:
        """Render a page; a flash message is shown once."""
        response = self.render.page(template, context, status)
        if FLASH_COOKIE in request.cookies:
            clear_cookie(response, request, FLASH_COOKIE)
        return response

    def error(self, status: int, message: str, session: Session | None = None) -> Response:
        """An error page."""
        ctx = {"queue": self.keys.queue, "session": session, "flash": "", "events_url": "", "path": "/ui/"}
        return self.render.page("error.html", {**ctx, "status": status, "message": message}, status)


class _LiveResponse(StreamingResponse):
    """A stream that gives its place back however it ends (even if it never started)."""

    def __init__(self, *args: Any, release: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._release = release

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


def _login_redirect(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/ui/login?{urlencode({'next': target})}", status_code=303)


async def form_of(request: Request, limit: int = 65_536) -> dict[str, str]:
    """The url-encoded form of a POST (first value of each field), at most ``limit`` bytes."""
    body = await request.body()
    if len(body) > limit:
        raise ValueError("form too large")
    fields: dict[str, str] = {}
    for key, value in parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True):
        fields.setdefault(key, value)
    return fields


PageHandler = Callable[[Request, Session], Awaitable[Response]]


def build_router(dash: Dashboard) -> APIRouter:  # noqa: PLR0915 - one nested function per page
    """The GET pages, sign-in and the event stream."""
    router = APIRouter(include_in_schema=False)

    def guarded(handler: PageHandler) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            session = await dash.signed_in(request)
            if session is None:
                return _login_redirect(request)
            request.state.events_since = await events.last_id(dash.client, dash.keys)
            return await handler(request, session)

        return run

    @router.get("/ui")
    async def ui_root() -> Response:
        return RedirectResponse("/ui/", status_code=307)

    @router.get("/ui/login")
    async def login_form(request: Request, next: str = "/ui/") -> Response:
        return _login_page(dash, request, safe_next(next), "", 200)

    @router.post("/ui/login")
    async def login(request: Request) -> Response:
        form = await form_of(request)
        next_url = safe_next(form.get("next"))
        address = client_address(request)
        wait_s = await dash.budget.wait_s(address)
        if wait_s:
            response = _login_page(dash, request, next_url, f"Too many wrong tokens; try again in {wait_s} s.", 429)
            response.headers["Retry-After"] = str(wait_s)
            return response
        nonce = request.cookies.get(LOGIN_COOKIE)
        if not dash.signer.login_ok(nonce, form.get("login_csrf")) or not await dash.revocations.spend_login(
            nonce or ""
        ):
            return _login_page(dash, request, next_url, "The sign-in form expired; try again.", 403)
        role = role_of(form.get("token", ""), dash.settings)
        if role is None:
            await dash.budget.failed(address)
            await asyncio.sleep(0.5)  # slows guessing
            return _login_page(dash, request, next_url, "That token is not valid.", 401)
        response = RedirectResponse(next_url, status_code=303)
        set_cookie(response, request, SESSION_COOKIE, dash.signer.issue(role), max_age=SESSION_TTL_S)
        clear_cookie(response, request, LOGIN_COOKIE, path="/ui/login")
        return response

    @router.post("/ui/logout")
    async def logout(request: Request) -> Response:
        session = dash.session(request)
        form = await form_of(request)
        if session is not None and not dash.signer.csrf_ok(session, form.get("csrf")):
            return dash.error(403, "missing or wrong CSRF token", session)
        if session is not None:
            await dash.revocations.revoke(session)
            dash.hub.end_session(session.nonce)
        response = RedirectResponse("/ui/login", status_code=303)
        clear_cookie(response, request, SESSION_COOKIE)
        return response

    async def overview(request: Request, session: Session) -> Response:
        counts = await current_counts(dash.client, dash.keys)
        periods = []
        for period, label, hours in PERIODS:
            stats = await dash.ops.stats(period)
            periods.append({"label": label, "stats": stats, "per_hour": stats.total_jobs / hours})
        active = await dash.ops.page(JobFilter(state=State.ACTIVE), limit=50, offset=0)
        stuck = await dash.ops.page(JobFilter(state=State.STUCK), limit=50, offset=0)
        ctx = await dash.context(
            request, session, counts=counts, periods=periods, active=active, stuck=stuck,
            workers=await dash.ops.workers(), paused=await dash.ops.admin.is_paused(), now_ms=time.time() * 1000,
        )  # fmt: skip
        return dash.page(request, "overview.html", ctx)

    async def jobs(request: Request, session: Session) -> Response:
        params = {k: request.query_params.get(k, "").strip() for k in FILTER_FIELDS}
        per = int(request.query_params.get("per", "50")) if request.query_params.get("per", "50").isdigit() else 50
        per = per if per in PER_PAGE else 50
        page_no = max(1, int(p)) if (p := request.query_params.get("page", "1")).isdigit() else 1
        error = ""
        flt = JobFilter()
        try:
            flt = job_filter(params)
        except ValueError as exc:
            error = str(exc)
        result = JobPage(jobs=[], total=0, limit=per, offset=(page_no - 1) * per)
        if not error and params["id"]:
            found = await get_status(dash.client, dash.keys, params["id"])
            result = JobPage(jobs=[found] if found else [], total=1 if found else 0, limit=per, offset=0)
        elif not error:
            result = await dash.ops.page(flt, limit=per, offset=(page_no - 1) * per)
        query = {k: v for k, v in params.items() if v} | ({"per": str(per)} if per != 50 else {})
        ctx = await dash.context(
            request, session, params=params, per=per, page_no=page_no, result=result, error=error,
            counts=await current_counts(dash.client, dash.keys), states=[s.value for s in State],
            pages=max(1, -(-result.total // per)), query=query, urlencode=urlencode,
            searching=flt.needs_scan or bool(params["id"]),
        )  # fmt: skip
        return dash.page(request, "jobs.html", ctx)

    async def job(request: Request, session: Session) -> Response:
        job_id = request.path_params["job_id"]
        status = await get_status(dash.client, dash.keys, job_id)
        if status is None:
            return dash.error(404, f"job {job_id!r} not found in queue {dash.keys.queue!r}", session)
        detail = await read_detail(dash.client, dash.keys, job_id)
        logs = await get_logs(dash.client, dash.keys, job_id)
        ctx = await dash.context(request, session, job=status, detail=detail, logs=logs, job_id=job_id)
        return dash.page(request, "job.html", ctx)

    async def raw(request: Request, session: Session) -> Response:
        job_id, field = request.path_params["job_id"], request.path_params["field"]
        value = await read_raw(dash.client, dash.keys, job_id, field) if field in RAW_FIELDS else None
        if value is None:
            return dash.error(404, f"job {job_id!r} has no {field!r}", session)
        name = quote(f"job-{job_id}-{field}.json", safe="")
        response = PlainTextResponse(utf8(value), headers={"Content-Disposition": f"inline; filename*=UTF-8''{name}"})
        return secure_headers(response)

    async def instances(request: Request, session: Session) -> Response:
        schedules = await dash.ops.schedules()
        found = await read_instances(dash.client, dash.keys, dash.catalog(), schedules)
        needle = request.query_params.get("q", "").strip().casefold()
        if needle:
            found = [i for i in found if needle in i.connector_id.casefold() or needle in i.connector.casefold()]
        page_no = max(1, int(p)) if (p := request.query_params.get("page", "1")).isdigit() else 1
        start = (page_no - 1) * INSTANCES_PER_PAGE
        ctx = await dash.context(
            request, session, instances=found[start : start + INSTANCES_PER_PAGE], total=len(found),
            page_no=page_no, pages=max(1, -(-len(found) // INSTANCES_PER_PAGE)), q=needle,
            catalog_ok=dash.catalog() is not None, catalog_file=str(dash.settings.catalog_file),
        )  # fmt: skip
        return dash.page(request, "instances.html", ctx)

    async def failures(request: Request, session: Session) -> Response:
        result = await breakdown(dash.client, dash.keys)
        ctx = await dash.context(request, session, breakdown=result, limit=SCAN_LIMIT)
        return dash.page(request, "failures.html", ctx)

    router.add_api_route("/ui/", guarded(overview), methods=["GET"])
    router.add_api_route("/ui/jobs", guarded(jobs), methods=["GET"])
    router.add_api_route("/ui/jobs/{job_id}", guarded(job), methods=["GET"])
    router.add_api_route("/ui/jobs/{job_id}/raw/{field}", guarded(raw), methods=["GET"])
    router.add_api_route("/ui/instances", guarded(instances), methods=["GET"])
    router.add_api_route("/ui/failures", guarded(failures), methods=["GET"])

    @router.get("/ui/events")
    async def live(request: Request, since: Annotated[str | None, Query(max_length=48)] = None) -> Response:
        session = await dash.signed_in(request)
        if session is None:
            return dash.error(401, "sign in first")
        sub = dash.hub.open(session.nonce)  # reserved now: the cap counts streams not yet started
        if isinstance(sub, str):
            return dash.error(503, sub, session)
        resume = request.headers.get("last-event-id") or since
        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        live_session = session

        async def alive() -> bool:  # signed out through another replica: ends at the next idle tick
            return not await dash.revocations.revoked(live_session)

        body = events.stream(dash.client, dash.keys, resume, sub, dash.hub, alive=alive)
        return _LiveResponse(body, media_type="text/event-stream", headers=headers, release=lambda: dash.hub.close(sub))

    return router


def _login_page(dash: Dashboard, request: Request, next_url: str, message: str, status: int) -> Response:
    nonce, token = dash.signer.login_nonce()
    ctx = {
        "queue": dash.keys.queue, "session": None, "flash": "", "events_url": "", "path": "/ui/login",
        "next": next_url, "login_csrf": token, "message": message,
    }  # fmt: skip
    response = dash.render.page("login.html", ctx, status)
    set_cookie(response, request, LOGIN_COOKIE, nonce, max_age=LOGIN_TTL_S, path="/ui/login")
    return response
