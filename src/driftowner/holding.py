"""Who held an incident when: the periods between its handovers, and what each holder did in
theirs. Pure: the report and ``/metrics`` both aggregate these holdings, so they agree, and a
reassignment never credits one owner's acknowledgement to the next."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from driftowner.model import Handover, Timing


@dataclass(frozen=True, slots=True)
class Holding:
    """One owner's period of accountability for one incident: from opening or the handover
    that gave it to them, until the handover that took it away, its resolution, or now.

    Times are Unix seconds; durations seconds.
    """

    incident_id: str
    owner: str
    system: str
    start: float
    end: float | None
    """When the holding ended (handed over or resolved); None while it lasts."""
    received: bool
    """The holding began with a handover (not with the opening)."""
    handed_over: bool
    """The holding ended with a handover."""
    time_to_acknowledge: float | None
    """From the holding's start to the first acknowledgement within it."""
    time_to_resolve: float | None
    """From the holding's start to the resolution that ended it."""
    ack_breached: bool
    """The holder took longer than ``ack_within`` to acknowledge, or held it unacknowledged
    past it."""
    resolve_breached: bool
    """The incident passed its ``resolve_within`` unresolved while this owner held it."""

    def held(self, now: float) -> float:
        """How long the owner held the incident (until ``now`` while they still do)."""
        return (self.end if self.end is not None else now) - self.start


def holdings(
    timing: Timing, handovers: Sequence[Handover], acknowledged: Sequence[float], now: float
) -> list[Holding]:
    """The incident's holdings in order: one per owner period.

    Args:
        timing: The incident's numbers (its current owner is the last holder).
        handovers: Its reassignments, oldest first.
        acknowledged: When it was acknowledged (every time, oldest first). Needed only with
            handovers: without them the first acknowledgement in ``timing`` says it all.
        now: The instant open holdings are measured to.
    """
    if not handovers:
        return [_whole(timing, now)]
    owners = [h.from_owner for h in handovers] + [timing.owner]
    starts = [timing.opened_at] + [h.at.timestamp() for h in handovers]
    ends: list[float | None] = [h.at.timestamp() for h in handovers]
    ends.append(timing.resolved_at)
    breach_at = (
        timing.opened_at + timing.resolve_within
        if timing.resolve_within is not None and timing.age(now) > timing.resolve_within
        else None
    )
    out = []
    for index, (owner, start, end) in enumerate(zip(owners, starts, ends, strict=True)):
        last = index == len(owners) - 1
        ack = next(
            (a for a in acknowledged if a >= start and (last or end is None or a < end)), None
        )
        tta = None if ack is None else ack - start
        waited = tta if tta is not None else (end if end is not None else now) - start
        out.append(
            Holding(
                incident_id=timing.incident_id,
                owner=owner,
                system=timing.system,
                start=start,
                end=end,
                received=index > 0,
                handed_over=not last,
                time_to_acknowledge=tta,
                time_to_resolve=None if not last or end is None else end - start,
                ack_breached=timing.ack_within is not None and waited > timing.ack_within,
                resolve_breached=breach_at is not None
                and breach_at >= start
                and (last or end is None or breach_at < end),
            )
        )
    return out


def _whole(timing: Timing, now: float) -> Holding:
    """The one holding of an incident never handed over: its own numbers (the common case,
    thousands per scrape, so built directly)."""
    tta = timing.time_to_acknowledge
    ttr = timing.time_to_resolve
    return Holding(
        incident_id=timing.incident_id,
        owner=timing.owner,
        system=timing.system,
        start=timing.opened_at,
        end=timing.resolved_at,
        received=False,
        handed_over=False,
        time_to_acknowledge=tta,
        time_to_resolve=ttr,
        ack_breached=timing.ack_breached(now),
        resolve_breached=timing.resolve_breached(now),
    )
