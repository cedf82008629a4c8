"""The operations dashboard: server-rendered pages under ``/ui/``, served by ``crawl-worker api``.

Modules: ``routes`` (pages, sign-in, live events), ``actions`` (confirmed admin actions),
``sessions`` (cookies, CSRF), ``render`` (templates, headers), and the data each page needs:
``detail`` (a job's big fields, folded), ``failures`` (error breakdown), ``instances`` (connector
instances), ``events`` (BullMQ's events stream as server-sent events).
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles

from worker.connections import RedisClient
from worker.operations import Operations
from worker.settings import Settings
from worker.ui.actions import build_actions
from worker.ui.render import STATIC
from worker.ui.routes import Dashboard, build_router


def install(app: FastAPI, settings: Settings, client: RedisClient, ops: Operations) -> Dashboard:
    """Add the dashboard's routes and static files to the API ``app``."""
    dashboard = Dashboard(settings, client, ops)
    app.include_router(build_router(dashboard))
    app.include_router(build_actions(dashboard))
    app.mount("/ui/static", StaticFiles(directory=STATIC), name="ui-static")
    return dashboard
