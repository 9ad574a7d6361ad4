"""Durable state: incidents, events, outbox, pending conditions, behind one ``Store`` protocol
with three backends: in memory (replay, tests), SQLite (the default) and PostgreSQL (HA)."""

from driftowner.store.base import (
    Changes,
    Conflict,
    Fingerprint,
    Store,
    StoreError,
    StoreUnavailable,
    StoreView,
)
from driftowner.store.memory import MemoryStore
from driftowner.store.sql import SqlStore

__all__ = [
    "Changes",
    "Conflict",
    "Fingerprint",
    "MemoryStore",
    "SqlStore",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "StoreView",
]
