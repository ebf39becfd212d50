"""Fakes of our own for adapters, shared by unit and integration tests (no mock.patch)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SendResult:
    error: Exception | None = None

    def failed(self) -> bool:
        return self.error is not None


@dataclass
class FakeProducer:
    """Accepts sends; the first `fail_first` of them are refused by the 'broker'."""

    fail_first: int = 0
    sent: list[tuple[str, bytes, bytes]] = field(default_factory=list)
    accepted: list[bytes] = field(default_factory=list)

    def send(self, topic: str, key: bytes, value: bytes) -> SendResult:
        self.sent.append((topic, key, value))
        if len(self.sent) <= self.fail_first:
            return SendResult(TimeoutError("broker busy"))
        self.accepted.append(value)
        return SendResult()

    def flush(self, timeout: float | None = None) -> None:
        pass

    def close(self) -> None:
        pass
