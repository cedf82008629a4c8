"""One attempt's hold on its connector instance: the lease, the run record and the deletions still to make.

Every store call a run makes goes through the handle, so the runner keeps only the step loop: take the
instance (:meth:`RunHandle.acquire`), commit steps (:meth:`save`), leave the checkpoint for the next attempt
(:meth:`interrupt`) or drop the run's state (:meth:`abandon`), end with the completion write
(:meth:`complete_call`), and let go (:meth:`close`). Keys of a replaced run's state are collected with
:meth:`drop_later` and deleted by the next write, in the same fenced call.
"""

from __future__ import annotations

from collections.abc import Iterable

from worker.connections import ScriptCall
from worker.crawlstate import StateChanges
from worker.errors import LeaseLost
from worker.logs import suppressed
from worker.rundata import RedisRunData
from worker.runs import Lease, RunRecord, RunStore


class RunHandle:
    """The lease on one instance, its record (set by the runner's begin), and the pending deletions."""

    def __init__(self, store: RunStore, lease: Lease) -> None:
        self._store = store
        self.lease = lease
        #: set when renewing the lease failed: another holder may own the instance now
        self.lost = store.hold(lease)
        self._record: RunRecord | None = None
        self._deletions: list[str] = []
        self._released = False

    @classmethod
    async def acquire(
        cls, store: RunStore, instance_key: str, token: str, *, takeover_prefix: str | None = None
    ) -> RunHandle | None:
        """Take the instance's lease (kept renewed until :meth:`close`); None while another run holds it."""
        lease = await store.acquire(instance_key, token, takeover_prefix=takeover_prefix)
        return None if lease is None else cls(store, lease)

    @property
    def key(self) -> str:
        """The instance's key (``org:connector:connectorId``)."""
        return self.lease.key

    @property
    def record(self) -> RunRecord:
        """The run's record (the runner sets it when the attempt begins)."""
        assert self._record is not None, "the run has not begun"
        return self._record

    @record.setter
    def record(self, record: RunRecord) -> None:
        self._record = record

    def stored_record(self) -> RunRecord | None:
        """The record the lease found stored when it was taken (the last run of the instance), if any."""
        return self.lease.record()

    def run_data(self) -> RedisRunData:
        """What the connector reads of this run's stored state (and of the last completed run's)."""
        return self._store.run_data(self.key, self.record)

    def check_held(self) -> None:
        """LeaseLost when the lease was lost during a step (its results must not be committed)."""
        if self.lost.is_set():
            raise LeaseLost(f"instance {self.key}: lease lost during a step")

    def keys(self, run_id: str | None, names: Iterable[str]) -> list[str]:
        """The data keys of the structures ``names`` of run ``run_id`` of this instance."""
        return [self._store.data_key(self.key, run_id, name) for name in names] if run_id is not None else []

    def drop_later(self, run_id: str | None, names: Iterable[str]) -> None:
        """Delete these structures of run ``run_id`` with the next write (a replaced run's state)."""
        self._deletions += self.keys(run_id, names)

    def _take_deletions(self, *more: str) -> list[str]:
        taken, self._deletions = [*self._deletions, *more], []
        return taken

    async def save(self, changes: StateChanges | None = None) -> None:
        """Write the record (and a step's ``changes``) fenced by the lease; pending deletions go with it."""
        await self._store.save(self.lease, self.record, changes, delete=self._take_deletions())

    async def interrupt(self) -> None:
        """Leave the run resumable at its last committed checkpoint (a failed write is logged: the record on
        Redis is the last committed step's, which resumes as well)."""
        self.record.interrupt()
        with suppressed("run.save_failed", run_id=self.record.run_id, status=self.record.status):
            await self.save()

    async def abandon(self, *, quietly: bool = False) -> None:
        """End the run without a resume point and drop its stored state (documents written stay).

        ``quietly``: a failed write is logged, not raised (the run is ending on another error).
        """
        record = self.record
        deletions = self._take_deletions(*self.keys(record.run_id, record.abandon()))
        if not quietly:
            await self._store.save(self.lease, record, delete=deletions)
            return
        with suppressed("run.save_failed", run_id=record.run_id, status=record.status):
            await self._store.save(self.lease, record, delete=deletions)

    def complete_call(self, carried: frozenset[str], last: StateChanges) -> ScriptCall:
        """The completion write, sent with the job's completion: the last step's changes to the ``carried``
        structures kept, everything else of the run (and what the next incremental run replaces) dropped, and
        the lease released."""
        record = self.record
        previous_run = record.last_completed_run_id
        dropped, replaced = record.complete(carried)
        deletions = self._take_deletions(*self.keys(record.run_id, dropped), *self.keys(previous_run, replaced))
        last.ops = [op for op in last.ops if op.name in carried]  # the rest is deleted in the same call
        self._released = True
        return self._store.save_call(self.lease, record, release=True, changes=last, delete=deletions)

    async def close(self) -> None:
        """Stop renewing the lease and give it back, unless the completion write releases it or it was lost."""
        self._store.drop(self.lease)
        if not self._released and not self.lost.is_set():
            with suppressed("run.lease_release_failed", lease=self.key):  # it expires on its own
                await self._store.release(self.lease)
