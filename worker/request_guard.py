"""What the HTTP API checks before it reads a request body: the bearer token, and the body's size.

FastAPI reads and parses a body before it runs the route's auth dependency, so an unauthenticated
100 MB request cost 340 MB of memory. This ASGI middleware answers 401 to a write on ``/v1/`` without
a valid token, and 413 to any body over the limit, before a byte of the body is read (a body without
a ``Content-Length`` is counted as it arrives, cut off at the limit and answered 413 too).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from worker.auth import role_of
from worker.settings import Settings
from worker.throttle import FailureBudget

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: The largest request body served (schedules and logins are a few hundred bytes).
MAX_BODY_BYTES = 256 * 1024
_WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class RequestGuard:
    """Refuses oversized bodies everywhere and unauthenticated writes under ``/v1/`` before reading them."""

    def __init__(
        self,
        app: ASGIApp,
        settings: Settings,
        max_body_bytes: int = MAX_BODY_BYTES,
        budget: FailureBudget | None = None,
    ) -> None:
        self.app = app
        self.settings = settings
        self.max_body_bytes = max_body_bytes
        self.budget = budget

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the headers; pass the request on with a receive that stops at the size limit."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {name.lower(): value for name, value in scope.get("headers", [])}
        if scope["path"].startswith("/v1/") and scope["method"] in _WRITES:
            scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
            if scheme.lower() != "bearer" or not token:
                await _reply(send, 401, "missing bearer token", authenticate=True)
                return
            address = str((scope.get("client") or ("unknown",))[0])
            wait_s = await self.budget.wait_s(address) if self.budget is not None else 0
            if wait_s:
                await _reply(send, 429, f"too many wrong tokens; retry in {wait_s} s", retry_after=wait_s)
                return
            if role_of(token.strip(), self.settings) is None:
                if self.budget is not None:
                    await self.budget.failed(address)
                await _reply(send, 401, "invalid token", authenticate=True)
                return
        length = headers.get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_body_bytes:
            await _reply(send, 413, f"request body over {self.max_body_bytes} bytes")
            return
        await self._bounded_call(scope, receive, send)

    async def _bounded_call(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app with a receive that stops at the size limit. A body past it (sent without a
        ``Content-Length``) is answered 413 here: whatever the app made of the cut body (a parse error,
        a disconnect) is dropped."""
        seen = 0
        over = started = False

        async def bounded() -> Message:
            nonlocal seen, over
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body_bytes:
                    over = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if over and not started:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, bounded, guarded_send)
        except Exception:
            if not over or started:
                raise
        if over and not started:
            await _reply(send, 413, f"request body over {self.max_body_bytes} bytes")


async def _reply(
    send: Send, status: int, message: str, *, authenticate: bool = False, retry_after: int | None = None
) -> None:
    body = json.dumps({"error": {"status": status, "message": message}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if authenticate:
        headers.append((b"www-authenticate", b"Bearer"))
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
