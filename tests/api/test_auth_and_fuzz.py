"""Auth on every endpoint and a schemathesis run against the OpenAPI spec: no 5xx on generated input."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import requests
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings
from schemathesis.core.result import Err, Ok

from tests.api.conftest import ADMIN, READ, auth, place_jobs
from tests.conftest import delete_keys
from tests.helpers import queue_and_hand_worker
from worker.api import create_app
from worker.errors import ConfigError
from worker.settings import Settings

PUBLIC = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}


@pytest.fixture(scope="module")
def api_url(redis_url: str) -> Iterator[str]:
    """The API on its own queue (with jobs in every state), served by uvicorn in a thread."""
    queue = f"cwtest-fuzz-{uuid.uuid4().hex[:8]}"
    s = Settings(
        redis_url=redis_url,
        queue_name=queue,
        api_read_token=READ,
        api_admin_token=ADMIN,
        metrics_enabled=False,
        api_auth_failures=1_000_000,  # every generated case also sends wrong tokens from this one address
    )

    async def place() -> None:
        async with queue_and_hand_worker(s) as (queue, worker):
            await place_jobs(queue, worker)

    asyncio.run(place())
    server = uvicorn.Server(uvicorn.Config(create_app(s), host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        assert thread.is_alive()
        threading.Event().wait(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)
    delete_keys(redis_url, "bull", queue)


def check_case(case: Any, session: requests.Session) -> None:
    """Admin token -> no 5xx and a JSON/CSV body; no or wrong token -> 401; read token on a write -> 403."""
    response = case.call(session=session, headers=auth(ADMIN))
    assert response.status_code < 500, (case.method, case.formatted_path, response.text)
    content_type = response.headers.get("content-type", [""])[0]
    assert content_type.startswith(("application/json", "text/csv")), response.headers
    assert case.call(session=session, headers={}).status_code == 401
    assert case.call(session=session, headers=auth("wrong")).status_code == 401
    as_reader = case.call(session=session, headers=auth(READ))
    if case.method.upper() == "GET":
        assert as_reader.status_code < 500
        assert as_reader.status_code not in (401, 403)
    else:
        assert as_reader.status_code == 403


@pytest.mark.slow
def test_generated_requests_never_5xx_and_always_need_the_right_token(api_url: str) -> None:
    """schemathesis generates requests for every operation in the spec (bounded examples each) and checks them."""
    schema = schemathesis.openapi.from_url(f"{api_url}/openapi.json")
    results = list(schema.get_all_operations())
    assert [result.err() for result in results if isinstance(result, Err)] == []
    operations = [result.ok() for result in results if isinstance(result, Ok)]
    assert len(operations) >= 15
    # One session of ours, closed here: the sessions schemathesis makes per call left sockets for the garbage
    # collector, whose ResourceWarning then failed whichever later test it ran in.
    with requests.Session() as session:
        for operation in operations:

            @given(case=operation.as_strategy())
            @settings(
                max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), database=None, derandomize=True
            )
            def run(case: Any) -> None:
                check_case(case, session)

            run()


def test_every_operation_in_the_spec_is_protected(api_url: str) -> None:
    """Each documented path and method answers 401 without a token (public: only the docs)."""
    spec = httpx.get(f"{api_url}/openapi.json").json()
    count = 0
    for path, methods in spec["paths"].items():
        for method in methods:
            concrete = path.replace("{job_id}", "1").replace("{connector}", "web").replace("{connector_id}", "x")
            resp = httpx.request(method, f"{api_url}{concrete}")
            assert resp.status_code == 401, (method, path)
            assert resp.json()["error"]["message"] == "missing bearer token"
            count += 1
    assert count >= 15


@pytest.mark.parametrize("tokens", [{}, {"api_read_token": "", "api_admin_token": ""}])
def test_no_token_configured_refuses_to_start(make_settings: Callable[..., Settings], tokens: dict[str, str]) -> None:
    """Without any configured token the API is never served open."""
    with pytest.raises(ConfigError, match="refusing to serve without auth"):
        create_app(make_settings(**tokens))


async def test_redis_down_is_a_json_503(make_settings: Callable[..., Settings]) -> None:
    """With Redis unreachable the API answers 503 with a JSON error, not a stack trace."""
    from tests.api.conftest import serve

    settings = make_settings(
        redis_url="redis://127.0.0.1:1/0", redis_connect_timeout_s=0.5, api_read_token=READ, api_admin_token=ADMIN
    )
    async with serve(settings) as http:
        resp = await http.get("/v1/jobs/1", headers=auth(READ))
    assert resp.status_code == 503
    assert resp.json()["error"]["message"].startswith("redis unavailable")
