"""The two tokens of the job API and the dashboard, and the role each one grants.

``api_read_token`` grants reads; ``api_admin_token`` grants reads and every operation. The JSON API
takes them as bearer tokens (``worker.api``), the dashboard at sign-in (``worker.ui.sessions``).
"""

from __future__ import annotations

import hmac
from enum import StrEnum

from pydantic import SecretStr

from worker.errors import ConfigError
from worker.settings import Settings


class Role(StrEnum):
    """What a token or a dashboard session may do."""

    READ = "read"
    ADMIN = "admin"


def _configured(token: SecretStr | None) -> bytes | None:
    return token.get_secret_value().encode() if token is not None and token.get_secret_value() else None


def _same(given: str, expected: bytes | None) -> bool:
    return expected is not None and hmac.compare_digest(given.encode(), expected)


def role_of(token: str, settings: Settings) -> Role | None:
    """The role ``token`` grants (admin wins when both tokens are equal), or None for a wrong token."""
    if _same(token, _configured(settings.api_admin_token)):
        return Role.ADMIN
    if _same(token, _configured(settings.api_read_token)):
        return Role.READ
    return None


def has_admin(settings: Settings) -> bool:
    """Is an admin token configured (else no one can act, only read)?"""
    return _configured(settings.api_admin_token) is not None


#: The shortest token accepted: a short one is guessed (``openssl rand -hex 16`` gives 32 characters).
MIN_TOKEN_CHARS = 16


def require_tokens(settings: Settings) -> None:
    """ConfigError unless at least one token is configured and every configured one is long enough:
    the API never serves without auth, nor with a token a guesser finds."""
    if _configured(settings.api_read_token) is None and _configured(settings.api_admin_token) is None:
        raise ConfigError("the job API needs api_read_token and/or api_admin_token; refusing to serve without auth")
    for name, token in (("api_read_token", settings.api_read_token), ("api_admin_token", settings.api_admin_token)):
        value = _configured(token)
        if value is not None and len(value) < MIN_TOKEN_CHARS:
            raise ConfigError(
                f"{name} is {len(value)} characters; use at least {MIN_TOKEN_CHARS} (e.g. `openssl rand -hex 16`)"
            )


def token_material(settings: Settings) -> bytes:
    """Both configured tokens, for deriving keys that change whenever a token does."""
    return b"\0".join(_configured(t) or b"" for t in (settings.api_admin_token, settings.api_read_token))
