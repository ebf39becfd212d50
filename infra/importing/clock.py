"""When things happened, as the source says it: timestamps in the forms logs use, naive ones in
the mapping's zone, gaps filled from neighbours, and a marked synthetic clock for runs with none."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

# Runs whose source records no time at all are placed here, a second per message: an instant
# no real run has, so a reader cannot take it for one (their proposals are also flagged).
SYNTHETIC_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
TIME_KEYS = ("timestamp", "created_at", "time", "started_at", "start_time", "date")
_TICK = timedelta(microseconds=1)


def parse_time(value: Any, zone: ZoneInfo) -> datetime | None:
    """An ISO 8601 text or Unix seconds (milliseconds past 1e11); naive times are in `zone`."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        seconds = value / 1000 if value > 1e11 else value
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=zone)


def time_of(record: Any, zone: ZoneInfo) -> datetime | None:
    if not isinstance(record, dict):
        return None
    for key in TIME_KEYS:
        if key in record:
            found = parse_time(record[key], zone)
            if found is not None:
                return found
    return None


def fill(times: Sequence[datetime | None], start: datetime | None) -> tuple[list[datetime], bool]:
    """Every position's time, and whether the clock is synthetic. A position without one takes
    its predecessor's plus a microsecond a step (its successor's minus, before the first), so
    the order stays the source's."""
    known = [t for t in times if t is not None]
    if not known and start is None:
        return [SYNTHETIC_EPOCH + timedelta(seconds=i + 1) for i in range(len(times))], True
    filled: list[datetime] = []
    last: datetime | None = start
    for index, value in enumerate(times):
        if value is not None:
            last = value
        elif last is not None:
            last = last + _TICK
        else:
            following = next(t for t in times[index:] if t is not None)
            last = following - _TICK * (times.index(following) - index)
        filled.append(last)
    return filled, False
