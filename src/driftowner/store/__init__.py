"""Durable state: incidents, events, outbox, pending conditions."""

from driftowner.store.sql import (
    Changes,
    Conflict,
    Settled,
    Store,
    StoreError,
    StoreUnavailable,
)

__all__ = ["Changes", "Conflict", "Settled", "Store", "StoreError", "StoreUnavailable"]
