"""The decisions relay: every lane and review decision the store records (and each consent
the run's lane contract takes for an approval), published once to `agent-steps.decisions`
for the platforms that gate execution on them.

One loop: read a page of the log after the tracked position → the page's notices
(domain/notices.py), in log order → send each to its run's partition with its log
position in a header → flush → track the page's end. The tracked position moves
only after the broker has every notice of the page, so a crash never skips one.

It never publishes one twice either. Notices go out in log order, one partition
at a time in order, with an idempotent producer (a retried send is not a second
message), so each partition's last message says how far that partition got. On
start the relay reads those ends (infra/decisions.published_positions) and, until
it has passed them, skips a notice its partition already holds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol
from uuid import UUID

from eventsourcing.persistence import PersistenceError
from eventsourcing.postgres import PostgresDatastore
from kafka.errors import KafkaError
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Composed, Identifier

from domain.contracts import ContractLookup
from domain.notices import DecisionNotice, notices
from domain.run import Entry
from infra.decisions import POSITION_HEADER, partition_for
from infra.retry import Backoff, pause, transient
from infra.subject_keys import KeyRing
from projections import quarantine
from projections.log import EventLog, Recorded, group_by_run, histories, listening
from projections.reveal import opened_histories

log = logging.getLogger(__name__)
RELAY = "decisions"


class NoticeProducer(Protocol):
    """What the relay asks of its Kafka producer (kafka-python's KafkaProducer)."""

    def send(
        self, topic: str, value: bytes, key: bytes, headers: list[tuple[str, bytes]], partition: int
    ) -> Any: ...
    def flush(self, timeout: float | None = None) -> None: ...
    def partitions_for(self, topic: str) -> set[int]: ...


def relay_table(schema: str) -> Composed:
    return SQL("{}.{}").format(Identifier(schema), Identifier("receipts_relays"))


def create_relay_table(datastore: PostgresDatastore, schema: str) -> None:
    """How far each relay has published the log, and the quarantine the log reads beside it
    (the writer side creates them)."""
    with datastore.transaction(commit=True) as curs:
        curs.execute(
            SQL("CREATE TABLE IF NOT EXISTS {} (name text PRIMARY KEY, position bigint NOT NULL)").format(
                relay_table(schema)
            )
        )
        quarantine.create(curs, schema)


class DecisionRelay:
    def __init__(
        self,
        datastore: PostgresDatastore,
        log_: EventLog,
        producer: NoticeProducer,
        topic: str,
        channel: str,
        published: Callable[[], dict[int, int]],
        keys: KeyRing,
        page_size: int = 500,
    ) -> None:
        self.datastore = datastore
        self.keys = keys
        self.log = log_
        self.producer = producer
        self.topic = topic
        self.channel = channel
        self._published = published  # each partition's last published position, read from the topic
        self.page_size = page_size
        self.table = relay_table(log_.schema)
        self.position = 0
        self.already: dict[int, int] = {}
        self.sent = 0

    def start(self) -> None:
        """From the tracked position, knowing what each partition already holds."""
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(SQL("SELECT position FROM {} WHERE name = %s").format(self.table), (RELAY,))
            row = curs.fetchone()
        self.position = int(row["position"]) if row else 0
        self.already = {p: last for p, last in self._published().items() if last > self.position}
        log.info(
            "decisions relay from log position %d; partitions ahead of it: %s", self.position, self.already
        )

    def run(self, should_stop: Callable[[], bool], idle_wait: float = 1.0) -> None:
        """Relay until told to stop. A server that is away is waited for; then what the
        topic holds is read again, since a failed flush may have delivered part of a page."""
        backoff = Backoff(first=0.2)
        self.start()
        with listening(self.datastore, self.channel) as wait_for_write:
            while not should_stop():
                try:
                    if backoff.failures:
                        self.start()
                    if not self.relay_once():
                        wait_for_write(idle_wait)
                    backoff.succeeded()
                except (KafkaError, PersistenceError, OSError) as error:
                    if isinstance(error, PersistenceError) and not transient(error):
                        raise
                    delay = backoff.failed()
                    log.warning("decisions relay paused %.1f s: %s: %s", delay, type(error).__name__, error)
                    pause(delay, should_stop)

    def relay_once(self) -> bool:
        """Publish one page's notices; False when the log holds nothing new."""
        with self.datastore.transaction(commit=False) as curs:
            curs.row_factory = tuple_row  # type: ignore[assignment]  # what the log reads
            page = self.log.after(curs, self.position, self.page_size)
            if page.end == self.position:
                return False
            runs = opened_histories(self.keys, histories(curs, self.log, page.steps))
            # Read while the transaction is open: a consent is a decision where the run's
            # lane contract (a recorded policy) accepts it.
            found = self._in_log_order(page.steps, runs, self.log.policy_book.lookup(curs))
        partitions = len(self.producer.partitions_for(self.topic))
        sent = 0
        for position, notice in found:
            partition = partition_for(notice.run_id, partitions)
            if position <= self.already.get(partition, -1):
                continue  # published before a restart
            self.producer.send(
                self.topic,
                value=notice.model_dump_json().encode(),
                key=notice.run_id.encode(),
                headers=[(POSITION_HEADER, str(position).encode()), ("tenant", notice.tenant.encode())],
                partition=partition,
            )
            sent += 1
        self.producer.flush()  # raises if the broker did not take them all: the page is read again
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(
                SQL(
                    "INSERT INTO {} (name, position) VALUES (%s, %s) "
                    "ON CONFLICT (name) DO UPDATE SET position = EXCLUDED.position"
                ).format(self.table),
                (RELAY, page.end),
            )
        self.position = page.end
        self.sent += sent
        return True

    @staticmethod
    def _in_log_order(
        steps: list[Recorded], runs: dict[UUID, list[Entry]], contracts: ContractLookup
    ) -> list[tuple[int, DecisionNotice]]:
        positions = {(r.run_key, r.entry.version): r.position for r in steps}
        found = [
            (positions[(run_key, version)], notice)
            for run_key, new in group_by_run(steps).items()
            for version, notice in notices(runs[run_key], new, contracts)
        ]
        return sorted(found, key=lambda pair: pair[0])
