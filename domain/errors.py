"""One base for the errors a person is meant to read: each says what HTTP status
and what CLI exit code it is, so the API and the CLI handle them in one place."""

from __future__ import annotations


class ReceiptsError(Exception):
    """An error with a sentence a person can act on."""

    status: int = 500  # the HTTP status of its problem document
    title: str = "Internal error"
    exit_code: int = 2  # what the `receipts` command exits with

    def headers(self) -> dict[str, str]:
        """HTTP headers its problem document carries (Retry-After, WWW-Authenticate…)."""
        return {}

    @property
    def detail(self) -> str:
        return str(self.args[0]) if self.args else self.title


class NotFound(ReceiptsError):
    status = 404
    title = "Not found"


class Invalid(ReceiptsError):
    status = 422
    title = "Invalid request"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class Conflict(ReceiptsError):
    status = 409
    title = "Conflict"


class Unavailable(ReceiptsError):
    status = 503
    title = "Unavailable"
    retry_after: int | None = None  # seconds, sent as Retry-After

    def headers(self) -> dict[str, str]:
        return {} if self.retry_after is None else {"Retry-After": str(self.retry_after)}


class Unauthorized(ReceiptsError):
    """No usable token: none, malformed, unknown or revoked. Which of these is not
    told to the caller beyond its own request (a missing header, a malformed one)."""

    status = 401
    title = "Unauthorized"
    exit_code = 3

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="receipts"'}


class Forbidden(ReceiptsError):
    """A known principal asking for what its tenant or roles do not allow."""

    status = 403
    title = "Forbidden"
    exit_code = 3
