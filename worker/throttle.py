"""A budget of failed sign-ins and bearer tokens per client address, kept in Redis.

Every wrong token (dashboard sign-in form or ``Authorization: Bearer``) spends one unit of the
address's budget (``api_auth_failures``) for the window (``api_auth_window_s``), counted in
``<prefix>:<queue>:cw:authfail:<address>`` (expiring with the window, shared by every API replica).
An address over budget is answered 429 with ``Retry-After`` before its token is even compared,
right or wrong, so guessing runs at a few tries a window, not hundreds a second.
"""

from __future__ import annotations

from worker.connections import RedisClient
from worker.settings import Settings
from worker.status import Keys


class FailureBudget:
    """Counts failed authentications per client address; tells when an address must wait."""

    def __init__(self, client: RedisClient, keys: Keys, settings: Settings) -> None:
        self._client = client
        self._keys = keys
        self.limit = settings.api_auth_failures
        self.window_s = settings.api_auth_window_s

    def _key(self, address: str) -> str:
        return self._keys.key(f"cw:authfail:{address[:64]}")

    async def wait_s(self, address: str) -> int:
        """Seconds ``address`` must wait before its next try (0: it may try now)."""
        key = self._key(address)
        used = await self._client.get(key)
        if used is None or int(used) < self.limit:
            return 0
        ttl = int(await self._client.ttl(key))
        return ttl if ttl > 0 else self.window_s

    async def failed(self, address: str) -> None:
        """Spend one unit of ``address``'s budget (the window starts at its first failure)."""
        key = self._key(address)
        pipe = self._client.pipeline(transaction=False)
        pipe.incr(key)
        pipe.expire(key, self.window_s, nx=True)
        await pipe.execute()
