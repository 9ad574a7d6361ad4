"""Durable state: incidents, events, outbox, pending conditions."""

from driftowner.store.sql import Changes, Conflict, Store, StoreError, StoreUnavailable

__all__ = ["Changes", "Conflict", "Store", "StoreError", "StoreUnavailable"]
