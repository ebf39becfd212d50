"""The reviewer's console at scale: first byte of the queue page and of a receipt page.

Over `receipts serve` (the bench's), one keep-alive connection signed in through the
console's own form as a reviewer holding every role the corpus routes to. A page is
timed from sending its request to the arrival of its status line and headers (the
first byte: the page is rendered whole before it is sent), then its body is read. The
issue's target: < 100 ms p99 at 1M runs for each.
"""

from __future__ import annotations

import http.client
import random
import re
import time
from collections.abc import Sequence
from http.cookies import SimpleCookie
from urllib.parse import quote, urlencode
from uuid import uuid4

from api.bootstrap import open_store
from bench.corpus import RunKeys
from bench.lookups import Api, Timings
from bench.steps import REVIEWERS
from bench.support import TENANT, say
from infra.principals import Principals
from infra.settings import Settings

TARGET_MS = 100.0
QUEUE, RECEIPT = "console: queue page, first byte", "console: receipt page, first byte"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


class Browser:
    """One keep-alive connection carrying the console's cookies."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, body: str | None = None) -> tuple[int, float, bytes]:
        """Status, milliseconds to the first byte, and the body."""
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        started = time.perf_counter()
        self.conn.request(method, path, body=body, headers=headers)
        response = self.conn.getresponse()  # returns once the status line and headers are in
        first_byte = (time.perf_counter() - started) * 1000
        content = response.read()
        for header in response.headers.get_all("Set-Cookie") or []:
            for name, morsel in SimpleCookie(header).items():
                self.cookies[name] = morsel.value
        return response.status, first_byte, content

    def sign_in(self, token: str) -> None:
        status, _, form = self.request("GET", "/ui/")
        found = _CSRF.search(form.decode())
        if status != 200 or found is None:
            raise RuntimeError(f"the console's sign-in page answered {status}")
        status, _, body = self.request("POST", "/ui/", urlencode({"token": token, "csrf": found.group(1)}))
        if status != 303 or "receipts_session" not in self.cookies:
            raise RuntimeError(f"signing in to the console failed ({status}): {body[:300]!r}")

    def close(self) -> None:
        self.conn.close()


def reviewer_token(settings: Settings) -> str:
    store = open_store(settings)
    try:
        principals = Principals(store.steps.datastore, settings.database_schema)
        roles = sorted({role for _, role in REVIEWERS})
        return principals.add(f"bench-reviewer-{uuid4().hex[:8]}", TENANT, roles, "bench")
    finally:
        store.close()


def time_pages(
    settings: Settings, api: Api, samples: Sequence[RunKeys], rounds: int, warmup: int, seed: int
) -> dict[str, Timings]:
    timings = {QUEUE: Timings(QUEUE, TARGET_MS), RECEIPT: Timings(RECEIPT, TARGET_MS)}
    browser = Browser(api.port)
    rng = random.Random(seed)
    try:
        browser.sign_in(reviewer_token(settings))
        say(f"console: queue and receipt pages, {rounds:,} each after {warmup} untimed")
        for i in range(warmup + rounds):
            run_id = rng.choice(samples).run_id
            for name, path in ((QUEUE, "/ui/queue"), (RECEIPT, "/ui/runs/" + quote(run_id, safe=""))):
                status, ms, body = browser.request("GET", path)
                timing = timings[name]
                if status != 200:
                    timing.http_errors += 1
                    if timing.http_errors == 1:
                        say(f"HTTP {status} for {path}: {body[:300]!r}")
                elif i >= warmup:
                    timing.http_ms.append(ms)
    finally:
        browser.close()
    return timings
