"""The job API over HTTP (FastAPI): JobStatus reads, listings, stats, operations and schedules.

Every endpoint needs a bearer token: reads take the read or the admin token, writes only the admin
token (``api_read_token`` / ``api_admin_token``). With neither configured the app refuses to start.
Errors are JSON ``{"error": {"status": ..., "message": ...}}``. The operations dashboard
(:mod:`worker.ui`) is served by the same app under ``/ui/``, with its own sign-in and HTML errors.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException

from worker import __version__
from worker.auth import Role, require_tokens, role_of
from worker.connections import make_client
from worker.errors import InvalidJobData, JobNotFound, WrongState
from worker.jobs import JobFilter, JobPage
from worker.logs import get_logger
from worker.models import JobStatus, State
from worker.operations import CLEAN_STATES, Operations
from worker.request_guard import RequestGuard
from worker.schedules import ScheduleRequest
from worker.settings import Settings
from worker.stats import JobStats, Period
from worker.throttle import FailureBudget
from worker.ui import install as install_dashboard

log = get_logger(__name__)
#: The oldest ``olderThanMs`` taken (100 years; more answers 422).
MAX_AGE_MS = 100 * 365 * 86_400_000
JobId = Annotated[str, Path(min_length=1, max_length=512, description="BullMQ job id")]
_bearer = HTTPBearer(auto_error=False, description="read or admin token")


class JobLogs(BaseModel):
    """A job's log lines (``job.log``), oldest first."""

    id: str
    logs: list[str]


class Ids(BaseModel):
    """The jobs an operation touched."""

    count: int
    ids: list[str]


class Deleted(BaseModel):
    """Result of a removal."""

    id: str
    removed: bool


class Cancelled(BaseModel):
    """A cancel request: the job's state before, and ``failed`` (it was waiting: failed now) or ``signalled``
    (it is active: its worker stops it within seconds and fails it)."""

    id: str
    state: str
    action: str


class ErrorBody(BaseModel):
    """Error detail."""

    status: int
    message: str


class Error(BaseModel):
    """Every error response."""

    error: ErrorBody


def _fail(status: int, message: str) -> HTTPException:
    return HTTPException(status, message, headers={"WWW-Authenticate": "Bearer"} if status == 401 else None)


def _error(status: int, message: str) -> JSONResponse:
    body = Error(error=ErrorBody(status=status, message=message)).model_dump()
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, headers=headers)


def _filter(
    connector: Annotated[str | None, Query(max_length=200)] = None,
    connector_id: Annotated[str | None, Query(alias="connectorId", max_length=200)] = None,
    org_id: Annotated[str | None, Query(alias="orgId", max_length=200)] = None,
    created_after: Annotated[datetime | None, Query(alias="createdAfter")] = None,
    created_before: Annotated[datetime | None, Query(alias="createdBefore")] = None,
) -> JobFilter:
    return JobFilter(
        connector=connector,
        connector_id=connector_id,
        org_id=org_id,
        created_after=created_after,
        created_before=created_before,
    )


Filter = Annotated[JobFilter, Depends(_filter)]
RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": Error, "description": "missing or wrong token"},
    403: {"model": Error, "description": "read token used for an admin operation"},
}


def create_app(settings: Settings) -> FastAPI:  # noqa: PLR0915 - one route per operation
    """The API for ``settings.queue_name``. Raises ConfigError when no token is configured."""
    require_tokens(settings)
    client = make_client(settings)
    ops = Operations(settings, client)

    budget = FailureBudget(client, ops.keys, settings)

    async def authenticate(request: Request, creds: HTTPAuthorizationCredentials | None) -> Role:
        """The bearer token's role; 401 without a valid one, 429 while the address is over its budget."""
        if creds is None:
            raise _fail(401, "missing bearer token")
        address = request.client.host if request.client else "unknown"
        wait_s = await budget.wait_s(address)
        if wait_s:
            raise HTTPException(
                429, f"too many wrong tokens; retry in {wait_s} s", headers={"Retry-After": str(wait_s)}
            )
        role = role_of(creds.credentials, settings)
        if role is None:
            await budget.failed(address)
            raise _fail(401, "invalid token")
        return role

    async def reader(request: Request, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> None:
        await authenticate(request, creds)

    async def admin(request: Request, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> None:
        if await authenticate(request, creds) is Role.READ:
            raise _fail(403, "this operation needs the admin token")

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await dashboard.aclose()
        await ops.close()
        await client.aclose()

    app = FastAPI(
        title="crawl-worker job API",
        version=__version__,
        description=f"Jobs of BullMQ queue `{settings.queue_name}` in PipesHub's JobStatus shape.",
        lifespan=lifespan,
        responses=RESPONSES,
    )
    app.add_middleware(RequestGuard, settings=settings, budget=budget)  # token and size checked before a body is read
    read = [Depends(reader)]
    write = [Depends(admin)]
    dashboard = install_dashboard(app, settings, client, ops)

    def respond(request: Request, status: int, message: str) -> Response:
        """An error as the dashboard's HTML page under /ui, else as the API's JSON."""
        if request.url.path.startswith("/ui"):
            return dashboard.error(status, message, dashboard.session(request))
        return _error(status, message)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        response = respond(request, exc.status_code, str(exc.detail))
        if exc.headers and "Retry-After" in exc.headers:
            response.headers["Retry-After"] = exc.headers["Retry-After"]
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        parts = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:8]]
        return _error(422, "; ".join(parts) or "invalid request")

    @app.exception_handler(JobNotFound)
    async def not_found(_: Request, exc: JobNotFound) -> JSONResponse:
        return _error(404, str(exc))

    @app.exception_handler(WrongState)
    async def conflict(_: Request, exc: WrongState) -> JSONResponse:
        return _error(409, str(exc))

    @app.exception_handler(InvalidJobData)
    async def bad_schedule(_: Request, exc: InvalidJobData) -> JSONResponse:
        return _error(422, str(exc))

    @app.exception_handler(RedisError)
    async def redis_down(request: Request, exc: RedisError) -> Response:
        return respond(request, 503, f"redis unavailable: {type(exc).__name__}")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.error("api.error", error=str(exc), error_type=type(exc).__name__, path=request.url.path)
        return respond(request, 500, f"internal error ({type(exc).__name__})")

    @app.get("/v1/jobs", dependencies=read, tags=["jobs"])
    async def list_jobs(
        flt: Filter,
        state: State | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
        offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    ) -> JobPage:
        """Jobs matching the filters, newest finished first within a state, with the total."""
        return await ops.page(flt.model_copy(update={"state": state}), limit=limit, offset=offset)

    @app.get("/v1/jobs/export", dependencies=read, tags=["jobs"], response_class=StreamingResponse)
    async def export_jobs(flt: Filter, state: State | None = None, fmt: Literal["csv", "json"] = "json") -> Any:
        """Every matching job, streamed as CSV (header row) or a JSON array of JobStatus."""
        media = "text/csv" if fmt == "csv" else "application/json"
        return StreamingResponse(ops.export(flt.model_copy(update={"state": state}), fmt), media_type=media)

    @app.post("/v1/jobs/retry-failed", dependencies=write, tags=["operations"])
    async def retry_failed(flt: Filter) -> Ids:
        """Retry every failed job matching the filters."""
        ids = await ops.retry_failed(flt)
        return Ids(count=len(ids), ids=ids)

    @app.post("/v1/jobs/cancel", dependencies=write, tags=["operations"])
    async def cancel_matching(
        flt: Filter,
        state: State | None = None,
        discard_checkpoint: Annotated[bool, Query(alias="discardCheckpoint")] = False,
    ) -> Ids:
        """Cancel every waiting, delayed or active job matching the filters (``cancelled by api``)."""
        flt = flt.model_copy(update={"state": state})
        done = await ops.cancel_matching(flt, by="api", discard_checkpoint=discard_checkpoint)
        return Ids(count=len(done), ids=[result.id for result in done])

    @app.get("/v1/jobs/{job_id}", dependencies=read, tags=["jobs"], responses={404: {"model": Error}})
    async def get_job(job_id: JobId) -> JobStatus:
        """One job's JobStatus."""
        return (await ops.get(job_id))[0]

    @app.get("/v1/jobs/{job_id}/logs", dependencies=read, tags=["jobs"], responses={404: {"model": Error}})
    async def get_logs(job_id: JobId) -> JobLogs:
        """One job's log lines."""
        return JobLogs(id=job_id, logs=(await ops.get(job_id))[1])

    @app.post("/v1/jobs/{job_id}/retry", dependencies=write, tags=["operations"], responses={409: {"model": Error}})
    async def retry(job_id: JobId) -> JobStatus:
        """Retry a failed job."""
        return await ops.retry(job_id)

    @app.post("/v1/jobs/{job_id}/cancel", dependencies=write, tags=["operations"], responses={409: {"model": Error}})
    async def cancel(
        job_id: JobId, discard_checkpoint: Annotated[bool, Query(alias="discardCheckpoint")] = False
    ) -> Cancelled:
        """Cancel a job: a waiting or delayed one fails now; an active one is stopped by its worker within
        seconds and fails with ``cancelled by api``, without retries; its checkpoint is kept (the next run
        resumes) unless ``discardCheckpoint``."""
        result = await ops.cancel(job_id, by="api", discard_checkpoint=discard_checkpoint)
        return Cancelled(id=job_id, state=result.state, action=result.done)

    @app.post("/v1/jobs/{job_id}/promote", dependencies=write, tags=["operations"], responses={409: {"model": Error}})
    async def promote(job_id: JobId) -> JobStatus:
        """Run a delayed job now."""
        return await ops.promote(job_id)

    @app.delete("/v1/jobs/{job_id}", dependencies=write, tags=["operations"], responses={409: {"model": Error}})
    async def remove(job_id: JobId) -> Deleted:
        """Remove a job (not one a worker is processing)."""
        await ops.remove(job_id)
        return Deleted(id=job_id, removed=True)

    @app.get("/v1/stats", dependencies=read, tags=["stats"])
    async def stats(period: Period = Period.H24) -> JobStats:
        """Totals, success rate, average and p95 processing time, by connector and by status."""
        return await ops.stats(period)

    @app.get("/v1/queue", dependencies=read, tags=["queue"])
    async def queue_info() -> dict[str, Any]:
        """Queue name, paused flag and job counts per state."""
        return await ops.queue_info()

    @app.post("/v1/queue/pause", dependencies=write, tags=["queue"])
    async def pause() -> dict[str, Any]:
        """Pause the queue for every worker."""
        return await ops.pause()

    @app.post("/v1/queue/resume", dependencies=write, tags=["queue"])
    async def resume() -> dict[str, Any]:
        """Resume the queue."""
        return await ops.resume()

    @app.post("/v1/queue/clean", dependencies=write, tags=["queue"])
    async def clean(
        state: Literal[CLEAN_STATES],  # type: ignore[valid-type]
        older_than_ms: Annotated[int, Query(alias="olderThanMs", ge=0, le=MAX_AGE_MS)] = 0,
        limit: Annotated[int, Query(ge=1, le=100_000)] = 1000,
    ) -> Ids:
        """Delete jobs in a state finished (or created) more than ``olderThanMs`` ago."""
        ids = await ops.clean(state, older_than_ms, limit)
        return Ids(count=len(ids), ids=ids)

    @app.get("/v1/schedules", dependencies=read, tags=["schedules"])
    async def schedules() -> list[dict[str, Any]]:
        """Every connector-instance schedule (BullMQ job schedulers)."""
        return await ops.schedules()

    @app.put("/v1/schedules", dependencies=write, tags=["schedules"])
    async def upsert_schedule(req: ScheduleRequest) -> dict[str, Any]:
        """Create or update an instance's schedule from its scheduleConfig (disabled: removed)."""
        return await ops.upsert_schedule(req)

    @app.delete("/v1/schedules/{connector}/{connector_id}", dependencies=write, tags=["schedules"])
    async def remove_schedule(
        connector: Annotated[str, Path(max_length=200)], connector_id: Annotated[str, Path(max_length=200)]
    ) -> dict[str, Any]:
        """Remove an instance's schedule."""
        return {"removed": await ops.remove_schedule(connector, connector_id)}

    return app
