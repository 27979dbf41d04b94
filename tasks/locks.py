"""A Prefect lock manager whose locks expire: leases in the billing database.

Prefect's SERIALIZABLE isolation makes concurrent runs of a cached task wait for the one
holding the cache key's lock, so only one computes and the others read its result. The lock
managers Prefect ships either live in one process (memory) or never expire (file system: a run
killed while holding one blocks that key forever). This one keeps each lock as a lease
(``billing_recon.store.leases``) in the database all workers share; a holder that dies blocks
the key for at most ``BILLING_RECON_REFUND_LEASE_S`` seconds.
"""

from __future__ import annotations

import asyncio
import logging

from prefect.locking.protocol import LockManager

from billing_recon.store.leases import LeaseStore
from billing_recon_tasks.runtime import deps

log = logging.getLogger(__name__)


class LeaseLockManager(LockManager):
    """Prefect locks as expiring leases in the billing database of the current settings."""

    def _store(self) -> LeaseStore:
        current = deps()
        return LeaseStore(current.sessions.kw["bind"],
                          current.settings.orchestration.refund_lease_s)

    def acquire_lock(self, key: str, holder: str, acquire_timeout: float | None = None,
                     hold_timeout: float | None = None) -> bool:
        """Wait (at most ``acquire_timeout``) for the lock; hold it for the lease at most."""
        return self._store().acquire(key, holder, acquire_timeout, hold_timeout)

    async def aacquire_lock(self, key: str, holder: str, acquire_timeout: float | None = None,
                            hold_timeout: float | None = None) -> bool:
        """acquire_lock without blocking the event loop."""
        return await asyncio.to_thread(self.acquire_lock, key, holder, acquire_timeout,
                                       hold_timeout)

    def release_lock(self, key: str, holder: str) -> None:
        """Release; a lease that expired and was taken over is left to its new holder."""
        if not self._store().release(key, holder):
            log.warning("lock %s had expired and been taken over before its release", key)

    def is_locked(self, key: str) -> bool:
        """Whether an unexpired lease exists on ``key``."""
        return self._store().holder(key) is not None

    def is_lock_holder(self, key: str, holder: str) -> bool:
        """Whether ``holder`` holds an unexpired lease on ``key``."""
        return self._store().holder(key) == holder

    def wait_for_lock(self, key: str, timeout: float | None = None) -> bool:
        """Wait until ``key`` is free (at most until its lease expires)."""
        return self._store().wait_free(key, timeout)

    async def await_for_lock(self, key: str, timeout: float | None = None) -> bool:
        """wait_for_lock without blocking the event loop."""
        return await asyncio.to_thread(self.wait_for_lock, key, timeout)
