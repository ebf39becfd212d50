"""Every view the projections keep, in the order a page is applied to them."""

from __future__ import annotations

from projections.queue import Queue
from projections.rollbacks import Rollbacks
from projections.views import Findings, Receipts, Runs, Sources, Timeline, Touches, View

VIEWS: tuple[type[View], ...] = (Runs, Receipts, Touches, Sources, Findings, Timeline, Queue, Rollbacks)
VIEW_NAMES = tuple(view.name for view in VIEWS)
