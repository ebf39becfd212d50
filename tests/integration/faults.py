"""Servers of a test's own, to stop and start under a running service (the
session-wide ones are shared by every test and never stopped)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from infra.embedded import EmbeddedBroker, EmbeddedPostgres, free_port


class RestartableBroker:
    """A Tansu broker on a fixed port: restarting it empties every topic, as a
    restart of the embedded default does."""

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.log_dir = log_dir
        self.broker: EmbeddedBroker | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> str:
        self.broker = EmbeddedBroker(port=self.port, log_file=self.log_dir / "tansu.log")
        return self.broker.start()

    def stop(self) -> None:
        if self.broker is not None:
            self.broker.stop()
            self.broker = None

    def restart(self) -> None:
        self.stop()
        self.start()


@contextmanager
def restartable_broker(log_dir: Path) -> Iterator[RestartableBroker]:
    broker = RestartableBroker(log_dir)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


class RestartablePostgres:
    """An embedded PostgreSQL whose server can crash (`-m immediate`: no checkpoint,
    clients cut off mid-transaction) and start again on the same data directory
    and socket."""

    def __init__(self, data_dir: Path) -> None:
        self.embedded = EmbeddedPostgres(data_dir)
        self.url = ""

    def start(self) -> str:
        self.url = self.embedded.start()
        return self.url

    def crash(self) -> None:
        self.embedded.crash()

    def start_again(self) -> None:
        assert self.embedded.start() == self.url, "a restarted server must keep its address"

    def stop(self) -> None:
        self.embedded.stop()
