"""Process-wide memory settings for the loops that handle steps in bulk."""

from __future__ import annotations

import gc


def tune_gc() -> None:
    """Collect garbage less often in a process that decodes steps in bulk (ingest,
    projections, rebuild workers).

    A batch allocates a dozen short-lived objects per event, nearly all freed by
    reference counting; with the default thresholds the collector still ran a
    full pass over the heap every few batches: about a third of ingest time
    (bench/ingest.py: 24k -> 33k events/s) and half of a rebuild's (a page of
    20k decoded steps and rendered receipts: 102 -> 49 us an event). Start-up
    objects are frozen out of it."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)
