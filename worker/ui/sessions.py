"""Dashboard sign-in: a signed session cookie per token role, CSRF tokens bound to the session.

The session cookie is ``<role>.<expiry>.<nonce>.<mac>``: HttpOnly, SameSite=Strict, path ``/ui``,
Secure when the request came over TLS. The MAC key is derived from the configured tokens, so
replicas of the API accept each other's sessions and changing a token signs everyone out. Every
form that acts carries ``csrf`` = MAC of the session's nonce (the one-time message an action leaves,
``cw_flash``, is MACed with it too, so no one else's cookie writes text into a page); the sign-in
form carries one bound to a short-lived ``cw_login`` cookie (double submit), so no other site can
sign a browser in either.

Signing out revokes the session on the server (its nonce is kept in Redis until the session would have
expired), so a copied cookie is dead too. A sign-in form's nonce carries its expiry and is spent on
first use (kept in Redis for the form's lifetime): a captured form post cannot be replayed.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from urllib.parse import quote, unquote

from starlette.requests import Request
from starlette.responses import Response

from worker.auth import Role, has_admin, token_material
from worker.connections import RedisClient
from worker.settings import Settings
from worker.status import Keys

SESSION_COOKIE = "cw_session"
LOGIN_COOKIE = "cw_login"
FLASH_COOKIE = "cw_flash"
SESSION_TTL_S = 12 * 3600
LOGIN_TTL_S = 900
FLASH_CHARS = 500


@dataclass(frozen=True)
class Session:
    """A signed-in browser."""

    role: Role
    nonce: str
    csrf: str
    expires: int = 0

    @property
    def admin(self) -> bool:
        """May this session act (retry, remove, pause, ...)?"""
        return self.role is Role.ADMIN


class Signer:
    """Issues and checks session cookies and CSRF tokens for one API's settings."""

    def __init__(self, settings: Settings) -> None:
        self._key = hmac.new(token_material(settings), b"crawl-worker ui session v1", hashlib.sha256).digest()
        self._admin_allowed = has_admin(settings)

    def _mac(self, *parts: str) -> str:
        return hmac.new(self._key, "|".join(parts).encode(), hashlib.sha256).hexdigest()

    def issue(self, role: Role, now: float | None = None) -> str:
        """A new session cookie value for ``role``."""
        expires = str(int((time.time() if now is None else now) + SESSION_TTL_S))
        nonce = secrets.token_urlsafe(18)
        return ".".join((role.value, expires, nonce, self._mac("s", role.value, expires, nonce)))

    def session(self, cookie: str | None, now: float | None = None) -> Session | None:
        """The session a cookie value proves, or None (missing, forged, expired, or a role not configured)."""
        parts = (cookie or "").split(".")
        if len(parts) != 4:
            return None
        role_name, expires, nonce, mac = parts
        if not hmac.compare_digest(mac, self._mac("s", role_name, expires, nonce)):
            return None
        if not expires.isdigit() or int(expires) < (time.time() if now is None else now):
            return None
        role = Role(role_name) if role_name in Role.__members__.values() else None
        if role is None or (role is Role.ADMIN and not self._admin_allowed):
            return None
        return Session(role=role, nonce=nonce, csrf=self._mac("csrf", nonce), expires=int(expires))

    def flash(self, session: Session, message: str) -> str:
        """The flash cookie value carrying ``message`` (at most 500 characters) for this session: signed."""
        text = quote(message[:FLASH_CHARS], safe="")
        return f"{text}.{self._mac('flash', session.nonce, text)}"

    def read_flash(self, session: Session, value: str | None) -> str:
        """The message of a flash cookie this server signed for ``session`` ("" for anything else)."""
        text, _, mac = (value or "").rpartition(".")
        if not text or not hmac.compare_digest(mac, self._mac("flash", session.nonce, text)):
            return ""
        return unquote(text)[:FLASH_CHARS]

    def csrf_ok(self, session: Session, given: str | None) -> bool:
        """Does a form's ``csrf`` field belong to this session?"""
        return given is not None and hmac.compare_digest(given, session.csrf)

    def login_nonce(self, now: float | None = None) -> tuple[str, str]:
        """(cookie value ``<expiry>.<random>``, form token) for one sign-in form."""
        nonce = f"{int((time.time() if now is None else now) + LOGIN_TTL_S)}.{secrets.token_urlsafe(18)}"
        return nonce, self._mac("login", nonce)

    def login_ok(self, cookie: str | None, given: str | None, now: float | None = None) -> bool:
        """Does the sign-in form's token match its cookie, before the form expired?"""
        if not cookie or given is None or not hmac.compare_digest(given, self._mac("login", cookie)):
            return False
        expires = cookie.partition(".")[0]
        return expires.isdigit() and int(expires) >= (time.time() if now is None else now)


class Revocations:
    """Signed-out sessions and spent sign-in forms, in Redis (every API replica sees them)."""

    def __init__(self, client: RedisClient, keys: Keys) -> None:
        self._client = client
        self._keys = keys

    def _key(self, kind: str, nonce: str) -> str:
        return self._keys.key(f"cw:ui:{kind}:{nonce[:64]}")

    async def revoke(self, session: Session, now: float | None = None) -> None:
        """End ``session`` for good (kept until it would have expired)."""
        left = session.expires - int(time.time() if now is None else now)
        await self._client.set(self._key("revoked", session.nonce), 1, ex=max(1, left))

    async def revoked(self, session: Session) -> bool:
        """Did ``session`` sign out?"""
        return bool(await self._client.exists(self._key("revoked", session.nonce)))

    async def spend_login(self, nonce: str) -> bool:
        """Use a sign-in form's nonce; False when it was used before."""
        return bool(await self._client.set(self._key("login", nonce), 1, ex=LOGIN_TTL_S + 60, nx=True))


def secure(request: Request) -> bool:
    """Did the request come over TLS (directly, or through a proxy uvicorn trusts)?"""
    return request.url.scheme == "https"


def set_cookie(response: Response, request: Request, name: str, value: str, *, max_age: int, path: str = "/ui") -> None:
    """Set one of the dashboard's cookies: HttpOnly, SameSite=Strict, Secure over TLS."""
    response.set_cookie(
        name, value, max_age=max_age, path=path, httponly=True, samesite="strict", secure=secure(request)
    )


def clear_cookie(response: Response, request: Request, name: str, *, path: str = "/ui") -> None:
    """Remove one of the dashboard's cookies."""
    response.delete_cookie(name, path=path, httponly=True, samesite="strict", secure=secure(request))
