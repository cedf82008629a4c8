"""Dashboard sessions: signed cookies per role, CSRF bound to the session, sign-in form tokens."""

from __future__ import annotations

from collections.abc import Callable

from worker.auth import Role
from worker.settings import Settings
from worker.ui.sessions import SESSION_TTL_S, Signer


def test_a_session_cookie_proves_its_role_until_it_expires(make_settings: Callable[..., Settings]) -> None:
    """An issued cookie gives back its role; after the TTL, or with one character changed, it proves nothing."""
    signer = Signer(make_settings(api_read_token="r" * 20, api_admin_token="a" * 20))
    cookie = signer.issue(Role.ADMIN, now=1000)
    session = signer.session(cookie, now=1001)
    assert session is not None
    assert session.admin
    assert signer.session(cookie, now=1000 + SESSION_TTL_S + 1) is None
    forged = cookie.replace("admin.", "read.", 1)
    assert signer.session(forged, now=1001) is None
    assert signer.session(cookie[:-1] + ("0" if cookie[-1] != "0" else "1"), now=1001) is None


def test_changing_a_token_signs_everyone_out(make_settings: Callable[..., Settings]) -> None:
    """Sessions are keyed by the configured tokens: a new admin token invalidates old cookies; replicas agree."""
    old = Signer(make_settings(api_read_token="r" * 20, api_admin_token="a" * 20))
    replica = Signer(make_settings(api_read_token="r" * 20, api_admin_token="a" * 20))
    rotated = Signer(make_settings(api_read_token="r" * 20, api_admin_token="b" * 20))
    cookie = old.issue(Role.READ)
    assert replica.session(cookie) is not None
    assert rotated.session(cookie) is None


def test_no_admin_session_without_an_admin_token(make_settings: Callable[..., Settings]) -> None:
    """With only a read token configured, even a correctly signed admin cookie is refused."""
    signer = Signer(make_settings(api_read_token="r" * 20))
    assert signer.session(signer.issue(Role.ADMIN)) is None
    assert signer.session(signer.issue(Role.READ)) is not None


def test_csrf_tokens_belong_to_one_session(make_settings: Callable[..., Settings]) -> None:
    """A session's CSRF token is accepted for it and refused for another session; so are sign-in form tokens."""
    signer = Signer(make_settings(api_admin_token="a" * 20))
    one, two = signer.session(signer.issue(Role.ADMIN)), signer.session(signer.issue(Role.ADMIN))
    assert one is not None
    assert two is not None
    assert signer.csrf_ok(one, one.csrf)
    assert not signer.csrf_ok(one, two.csrf)
    assert not signer.csrf_ok(one, None)
    nonce, token = signer.login_nonce()
    assert signer.login_ok(nonce, token)
    assert not signer.login_ok(signer.login_nonce()[0], token)
    assert not signer.login_ok(None, token)
