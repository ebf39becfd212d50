"""The composition root: builds the store, the ingest loop and the publisher from Settings.

It lives in api/ because it wires consumers/ and infra/ together, and only the
layer above both may import both.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from eventsourcing.persistence import PersistenceError

from api.liveness import Beats, JoinWatchdog
from consumers.dead_letters import DeadLetterRelay, LetterProducer
from consumers.ingest import Ingest, StepConsumer
from consumers.positions import KafkaLogProbe, LogProbe
from consumers.signatures import SignatureCheck
from domain.routing import Router
from infra.decisions import published_positions
from infra.health import Health
from infra.kafka import consumer, ensure_topics, producer
from infra.memory import tune_gc
from infra.policies import loaded_by, read_policy_file
from infra.publisher import Publisher, StepProducer
from infra.publishers import PublisherKeys, Publishers, service_public_key, service_signer
from infra.recorder import schema_lock
from infra.settings import NotRunning, Settings
from infra.store import RunStore
from projections.decisions import DecisionRelay, NoticeProducer, create_relay_table
from projections.log import EventLog
from projections.queries import Queries
from projections.runner import ProjectionRunner, views_named
from projections.status import StatusProbe, StatusReader, Thresholds
from schemas import Codec

log = logging.getLogger(__name__)


def open_store(settings: Settings, *, create: bool = False) -> RunStore:
    """The event store. Only the writer side (`ingest`, `up`, `migrate`) creates its
    tables; readers (`serve`, the CLI's questions) open what is there."""
    env = {**settings.eventsourcing_env(), "CREATE_TABLE": "y" if create else "n"}
    if not create:
        store = RunStore(env=env)
    else:
        with schema_lock(_url(settings)):
            store = RunStore(env=env)
            with store.steps.datastore.transaction(commit=True) as curs:
                Health(settings.database_schema).create_tables(curs)
    store.service = service_signer(settings.signing_key_file)
    return store


def migrate(settings: Settings) -> None:
    """Create every table the service uses: the event store's, health's, the views', the relay's."""
    store = open_store(settings, create=True)
    try:
        build_projections(settings, store)
        with schema_lock(_url(settings)):
            create_relay_table(store.steps.datastore, settings.database_schema)
    finally:
        store.close()


def require_tables(settings: Settings, store: RunStore, tables: Sequence[str] = ()) -> None:
    """For the read side: a clear error, not a 500 per request, before its tables exist
    (default: the events table and the receipts view)."""
    schema = settings.database_schema
    names = [f'"{schema}"."{table}"' for table in tables or (store.steps.events_table_name, "view_receipts")]
    with store.steps.datastore.transaction(commit=False) as curs:
        curs.execute(
            "SELECT bool_and(to_regclass(name) IS NOT NULL) AS ok FROM unnest(%s::text[]) AS name", (names,)
        )
        row = curs.fetchone()
    if not (row and row["ok"]):
        raise NotRunning(
            f"the tables of schema {schema!r} do not exist yet: run `receipts migrate` "
            "(or `receipts up`, which does) first"
        )


def _url(settings: Settings) -> str:
    if not settings.database_url:
        raise NotRunning("RECEIPTS_DATABASE_URL is not set")
    return settings.database_url


def policy_in_force(settings: Settings, store: RunStore, by: str = "receipts ingest") -> Router:
    """Load RECEIPTS_POLICY (default: the sample) and put it in force, recorded in the store
    if it is not in force already; a file with an error raises PolicyFileInvalid (exit 2)."""
    policy, text = read_policy_file(settings.policy)
    loaded, new = store.record_policy(policy, text, loaded_by(by))
    log.info(
        "policy %s from %s %s",
        loaded.version,
        settings.policy or "the shipped sample",
        f"recorded and in force since {loaded.loaded_at.isoformat()}" if new else "already in force",
    )
    return Router(policy)


class PolicyWatch:
    """Between turns, every `every` seconds: has another policy been put in force (`receipts
    policy publish`, another process started with another file)? Then route by it from the
    next batch on. One small query a check; the store being away only delays the next."""

    def __init__(self, ingest: Ingest, store: RunStore, every: float) -> None:
        self.ingest, self.store, self.every = ingest, store, every
        self.next_check = time.monotonic() + every

    def on_each_turn(self, should_stop: Callable[[], bool]) -> Callable[[], bool]:
        def turn() -> bool:
            if time.monotonic() >= self.next_check:
                self.check()
            return should_stop()

        return turn

    def check(self) -> None:
        self.next_check = time.monotonic() + self.every
        current = self.ingest.router
        try:
            if current is None or self.store.latest_policy_version() == current.version:
                return
            loaded = self.store.policy_in_force()
        except (PersistenceError, OSError) as error:
            log.warning("could not check which policy is in force: %s", error)
            return
        policy = loaded.policy()
        if policy.version != loaded.version:  # a document altered in the table: keep routing as before
            log.error("stored policy %s does not hash to its version; not used", loaded.version)
            return
        self.ingest.router = Router(policy)
        log.info(
            "now routing by policy %s (loaded %s by %s)", loaded.version, loaded.loaded_at, loaded.loaded_by
        )


def build_ingest(
    settings: Settings,
    store: RunStore,
    *,
    consumer_of: Callable[[Settings], StepConsumer] = consumer,
    letters_producer: LetterProducer | None = None,
    probe: LogProbe | None = None,
    clock: Callable[[], datetime] | None = None,
    subscribe: bool = True,
    route: bool = True,
) -> Ingest:
    """The ingest loop, wired to Kafka and the store; tests hand in their own adapters.

    The ingest benchmark assigns partitions itself (`subscribe=False`) and measures
    what routing costs by turning it off (`route=False`); the service does neither."""
    assert settings.kafka_bootstrap
    router = policy_in_force(settings, store) if route else None
    ensure_topics(settings.kafka_bootstrap, settings.all_topics, settings.partitions)
    letters = letters_producer or producer(settings.kafka_bootstrap)
    if store.service is None:
        log.warning("no signing key at %s: the service's own steps are not signed", settings.signing_key_file)
    publishers = PublisherKeys(
        Publishers(store.steps.datastore, settings.database_schema).records,
        service=lambda: service_public_key(settings.signing_key_file),
    )
    ingest = Ingest(
        consumer=consumer_of(settings),
        recorder=store.steps,
        dead_letters=DeadLetterRelay(letters, settings.dlq_topic, store.steps),
        codec=store.codec,
        head_cache_runs=settings.head_cache_runs,
        max_batch=settings.max_batch,
        probe=probe or KafkaLogProbe(settings.kafka_bootstrap),
        check_every=settings.position_check_seconds,
        router=router,
        clock=clock or (lambda: datetime.now(UTC)),
        keys=store.steps.keyring if settings.personal_data else None,
        signatures=SignatureCheck(publishers),
        service=store.service,
    )
    if subscribe:
        ingest.subscribe(settings.topic)
    return ingest


def build_publisher(
    settings: Settings,
    codec: Codec | None = None,
    *,
    producer_: StepProducer | None = None,
    as_service: bool = False,
) -> Publisher:
    """The publisher agent platforms use; tests hand in their own producer. `as_service`: the
    service's own (decisions made through its API, rollback requests), signed by its key."""
    assert settings.kafka_bootstrap
    return Publisher(
        bootstrap=settings.kafka_bootstrap,
        topic=settings.topic,
        encoding=settings.encoding,
        codec=codec,
        producer=producer_,
        signer=service_signer(settings.signing_key_file) if as_service else None,
    )


def run_ingest(ingest: Ingest, should_stop: Callable[[], bool], settings: Settings, store: RunStore) -> None:
    """The loop, beating and watching its consumer's join between turns, then a clean close."""
    tune_gc()
    beats = Beats(settings, "ingest")
    watchdog = JoinWatchdog(ingest, settings, lambda group: consumer(settings, group_id=group), beats)
    watch = PolicyWatch(ingest, store, settings.policy_check_seconds)
    beats.beat(now=True)
    try:
        ingest.run(beats.on_each_turn(watchdog.on_each_turn(watch.on_each_turn(should_stop))))
    finally:
        ingest.close()
        totals = ingest.totals
        log.info(
            "ingest stopped: %d batches, %d recorded, %d duplicates, %d dead letters",
            totals.batches,
            totals.recorded,
            totals.duplicates,
            totals.dead,
        )
    beats.stopped()  # a crash leaves the row to go stale instead


def build_queries(settings: Settings, store: RunStore) -> Queries:
    return Queries(store.steps.datastore, settings.database_schema, settings.unfinished_after)


def build_projections(settings: Settings, store: RunStore, names: Sequence[str] = ()) -> ProjectionRunner:
    """A runner for the named views (default all), their tables created."""
    recorder = store.steps
    runner = ProjectionRunner(
        datastore=recorder.datastore,
        log=EventLog(settings.database_schema, recorder.events_table_name, store.codec),
        application_name=store.name,
        channel=recorder.channel_name,
        views=views_named(settings.database_schema, names),
        page_size=settings.projection_page,
    )
    with schema_lock(_url(settings)):
        runner.create_tables()
    return runner


def build_decision_relay(
    settings: Settings,
    store: RunStore,
    *,
    producer_: NoticeProducer | None = None,
    published: Callable[[], dict[int, int]] | None = None,
) -> DecisionRelay:
    """The relay of lane and review decisions to the decisions topic; tests hand in their own
    producer and what the topic already holds."""
    bootstrap = settings.kafka_bootstrap
    assert bootstrap
    ensure_topics(bootstrap, settings.all_topics, settings.partitions)
    recorder = store.steps
    with schema_lock(_url(settings)):
        create_relay_table(recorder.datastore, settings.database_schema)
    topic = settings.decisions_topic
    return DecisionRelay(
        datastore=recorder.datastore,
        log_=EventLog(settings.database_schema, recorder.events_table_name, store.codec),
        # Idempotent: a send the client retries is not a second message on the topic.
        producer=producer_ or producer(bootstrap, enable_idempotence=True, linger_ms=0),
        topic=topic,
        channel=recorder.channel_name,
        published=published or (lambda: published_positions(bootstrap, topic)),
        keys=recorder.keyring,
        page_size=settings.projection_page,
    )


def build_status(settings: Settings, store: RunStore) -> StatusProbe:
    """The health report, over a connection of its own (not the store's pool)."""
    thresholds = Thresholds(lag_events=settings.health_lag_events, lag_seconds=settings.health_lag_seconds)
    reader = StatusReader(settings.database_schema, store.steps.events_table_name, store.name, thresholds)
    return StatusProbe(_url(settings), reader)
