"""The shell's id sources: random, unguessable ids for incidents and notifications. The core
never calls them; it takes an id source as an argument (replay passes a counting one)."""

from __future__ import annotations

import secrets


def new_incident_id() -> str:
    """Short, unguessable, easy to type: ``inc-3f9a1c2b7e``."""
    return f"inc-{secrets.token_hex(5)}"


def new_notification_id() -> str:
    return secrets.token_hex(12)
