"""Every view the projections keep, in the order a page is applied to them."""

from __future__ import annotations

from projections.queue import Queue
from projections.reference_views import Sources, Touches
from projections.rollbacks import Rollbacks
from projections.run_views import Findings, Receipts, Runs, Timeline
from projections.views import View

VIEWS: tuple[type[View], ...] = (Runs, Receipts, Touches, Sources, Findings, Timeline, Queue, Rollbacks)
VIEW_NAMES = tuple(view.name for view in VIEWS)
