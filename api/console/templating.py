"""The console's templates and what every page is given."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse
from starlette.templating import Jinja2Templates

from api.console import HERE
from infra.sessions import Session

templates = Jinja2Templates(directory=HERE / "templates")  # autoescapes .html


def when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if value else "—"


def waited(since: datetime | None, now: datetime | None = None) -> str:
    """How long something has waited, as a person says it: 3 d 4 h, 2 h 5 min, 40 s."""
    if since is None:
        return "—"
    seconds = max(0, int(((now or datetime.now(UTC)) - since).total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min" if minutes else f"{seconds} s"


def until(deadline: datetime | None, now: datetime | None = None) -> str:
    if deadline is None:
        return "no deadline"
    left = deadline - (now or datetime.now(UTC))
    if left <= timedelta(0):
        return f"expired {waited(deadline, now)} ago"
    return "in " + waited((now or datetime.now(UTC)) - left, now)


def step_url(run_id: str, step_id: str) -> str:
    return "/ui/step?" + urlencode({"run": run_id, "step": step_id})


def run_url(run_id: str) -> str:
    return "/ui/runs/" + quote(run_id, safe="")


def linkable(uri: str | None) -> bool:
    """Whether a URI an agent published may be a link: http(s) only (never `javascript:`)."""
    return bool(uri) and (uri or "").lower().startswith(("https://", "http://"))


templates.env.filters.update(when=when, waited=waited, until=until, linkable=linkable)
templates.env.globals.update(step_url=step_url, run_url=run_url, urlencode=urlencode)


def page(
    request: Request, name: str, session: Session | None, status: int = 200, **context: Any
) -> HTMLResponse:
    context.update(principal=session.principal if session else None, csrf=session.csrf if session else None)
    return templates.TemplateResponse(request, name, context, status_code=status)
