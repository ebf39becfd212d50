"""`receipts up`: the embedded servers and the service's processes, supervised.

`up` starts PostgreSQL and the broker (unless external ones are configured),
then ingest, project and serve as child processes, and watches them all: a
child that exits is restarted with backoff (api/supervise.py). None outlives
`up`: the servers get a parent-death signal, the workers die with it
(api.service_cli.die_with_parent), and a new `up` stops what a killed one's state
file still names. Ctrl-C drains ingest, then stops the rest, servers last.

On its first start on embedded servers, `up` adds a local admin principal for
tenant `default` and writes its token to `.receipts/token` (0600), which the
CLI reads: the two commands of the README need no other step. On external
servers (RECEIPTS_DATABASE_URL) it adds nobody: their administrators do.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

import psutil

from api.bootstrap import migrate, open_store
from api.liveness import Beats
from api.supervise import DRAIN_SECONDS, PARENT, Child, GaveUp, RestartPolicy, Stop, Supervisor
from domain.policy import Policy
from domain.principals import ADMIN
from infra.embedded import (
    EmbeddedBroker,
    EmbeddedPostgres,
    free_port,
    port_is_free,
    stop_broker_pid,
    stop_postmaster,
)
from infra.policies import read_policy_file
from infra.principals import Principals, write_token_file
from infra.rollback.config import read_rollback_config
from infra.settings import NotRunning, Settings
from infra.signing import SigningKey, ensure_signing_key

log = logging.getLogger("receipts.up")
DEFAULT_KAFKA_PORT = 9092
TURN = 0.2
LOCAL_ADMIN = "local-admin"


def cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    # A policy file with an error stops `up` here, naming its line and field (exit 2),
    # before anything starts: ingest would only fail on it again at every restart.
    policy, _ = read_policy_file(settings.policy)
    if settings.rollback is not None:  # the same for the rollback targets
        read_rollback_config(settings.rollback)
    embedded_database = not settings.database_url
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    _take_over(settings)
    # Claim the data dir at once, so a second `up` refuses instead of taking over.
    claim = {"pid": os.getpid(), "database_url": None, "kafka_bootstrap": None}
    settings.state_file.write_text(json.dumps(claim))
    stop = Stop(drain=True)
    stop.install()
    beats: list[Beats] = []
    supervisor = Supervisor(RestartPolicy.of(settings), lambda: beats[0] if beats else None)
    try:
        settings = _start_servers(settings, args, supervisor)
        migrate(settings)  # every table, before any child needs one
        if embedded_database:
            _local_admin(settings, policy)
        _signing_key(settings)
        beats.append(Beats(settings, "up"))
        http_port = _http_port(settings, args.http_port)
        _write_state(settings, http_port, supervisor)
        commands = [["ingest", "--drain"], ["project"], ["relay"], ["serve", "--port", str(http_port)]]
        if settings.rollback is not None:  # without targets there is nothing it could undo
            commands.append(["rollback-worker"])
        for command in commands:
            supervisor.start(_worker(settings, command))
        code = _supervise(supervisor, stop, beats[0])
    finally:
        _stop_all(supervisor, stop)
        if beats:
            beats[0].stopped()
        supervisor.stop(["broker", "postgres"])
        settings.state_file.unlink(missing_ok=True)
    return code


def _start_servers(settings: Settings, args: argparse.Namespace, supervisor: Supervisor) -> Settings:
    """The embedded PostgreSQL and broker, as supervised children; returns settings
    that name them."""
    url = settings.database_url
    if not url:
        pg = EmbeddedPostgres(settings.data_dir / "pg")

        def start_postgres() -> subprocess.Popen[Any]:
            pg.start()
            assert pg.process is not None
            return pg.process

        # A fast shutdown, after everything that writes has stopped.
        supervisor.start(Child("postgres", start_postgres, signal.SIGINT, 30.0))
        url = pg.url
    bootstrap = settings.kafka_bootstrap
    if not bootstrap:
        port = args.kafka_port
        if port is None:  # 9092 when it is free, so the address is the usual one
            port = DEFAULT_KAFKA_PORT if port_is_free(DEFAULT_KAFKA_PORT) else 0
        broker = EmbeddedBroker(port=port or None, log_file=settings.data_dir / "tansu.log")

        def start_broker() -> subprocess.Popen[Any]:
            broker.start()
            assert broker.process is not None
            return broker.process

        supervisor.start(Child("broker", start_broker, signal.SIGTERM, 5.0))
        bootstrap = broker.bootstrap
    return settings.model_copy(update={"database_url": url, "kafka_bootstrap": bootstrap})


def _local_admin(settings: Settings, policy: Policy) -> None:
    """On the first start (no principal at all): an admin of tenant `default` holding every
    reviewer role the policy names, its token in the data dir for the CLI."""
    store = open_store(settings)
    try:
        principals = Principals(store.steps.datastore, settings.database_schema)
        if principals.any():
            return
        roles = {ADMIN, *(r.role for r in policy.rules if r.role)}
        roles |= {policy.default.role} if policy.default.role else set()
        roles |= {c.reviewer_role for c in policy.contracts.values() if c.reviewer_role}
        # …and whoever may decide an escalated step or ask for a rollback.
        roles |= {c.escalation_role for c in policy.contracts.values() if c.escalation_role}
        roles |= {c.rollback_role for c in policy.contracts.values()} | {"rollback"}
        token = principals.add(LOCAL_ADMIN, "default", roles, "receipts up (first start)")
    finally:
        store.close()
    write_token_file(settings.token_file, token)
    log.info(
        "added principal %s (tenant default, roles %s); its token is in %s",
        LOCAL_ADMIN,
        ", ".join(sorted(roles)),
        settings.token_file,
    )


def _signing_key(settings: Settings) -> None:
    """The key checkpoints are signed with: RECEIPTS_SIGNING_KEY must exist; the embedded
    default is created under the data dir on the first start. Its public half is printed
    so a team can keep it where the database's administrators cannot write."""
    if settings.signing_key is not None:
        key = SigningKey.load(settings.signing_key)
        created = False
    else:
        key, created = ensure_signing_key(settings.signing_key_file)
    print(
        f"Signing key {key.key_id} ({'created ' if created else ''}{settings.signing_key_file.resolve()}); "
        f"public key: {key.public.text}",
        flush=True,
    )


def _worker(settings: Settings, command: Sequence[str]) -> Child:
    env = {
        **os.environ,
        "RECEIPTS_DATABASE_URL": str(settings.database_url),
        "RECEIPTS_KAFKA_BOOTSTRAP": str(settings.kafka_bootstrap),
        "RECEIPTS_DATA_DIR": str(settings.data_dir),
        PARENT: str(os.getpid()),
    }

    def start() -> subprocess.Popen[Any]:
        # Its own session: a Ctrl-C in the terminal reaches only `up`, which then
        # stops the children in order (ingest drains first).
        return subprocess.Popen([sys.executable, "-m", "api.cli", *command], env=env, start_new_session=True)

    # Ingest drains for up to DRAIN_SECONDS before it stops.
    timeout = DRAIN_SECONDS + 15 if command[0] == "ingest" else 10.0
    return Child(command[0], start, signal.SIGTERM, timeout)


def _supervise(supervisor: Supervisor, stop: Stop, beats: Beats) -> int:
    print(
        "Ctrl-C drains what was published, then stops. `up` restarts a process that dies.",
        flush=True,
    )
    beats.beat(now=True)
    try:
        while not stop.requested():
            supervisor.turn()
            beats.beat()
            time.sleep(TURN)
    except GaveUp as error:
        log.error("receipts up gives up: %s; stopping everything", error)
        stop.hard = True  # nobody is restarting anything now: do not wait for a drain
        return 1
    return 0


def _stop_all(supervisor: Supervisor, stop: Stop) -> None:
    """Ingest first (draining what was published, unless a second signal says not
    to), then the other workers; the servers after that, in cmd_up."""
    supervisor.stop(["ingest"], again=lambda: stop.hard)
    supervisor.stop(["project", "relay", "serve", "rollback-worker"])


def _http_port(settings: Settings, asked: int | None) -> int:
    if asked is None:  # the configured port when it is free, so the address is the usual one
        return settings.http_port if port_is_free(settings.http_port) else free_port()
    return asked or free_port()


def _write_state(settings: Settings, http_port: int, supervisor: Supervisor) -> None:
    http = f"http://{settings.http_host}:{http_port}"
    broker = supervisor.children.get("broker")
    state = {
        "database_url": settings.database_url,
        "kafka_bootstrap": settings.kafka_bootstrap,
        "http": http,
        "pid": os.getpid(),
        # What a new `up` must stop if this one is killed (api.up._take_over).
        "broker_pid": broker.process.pid if broker and broker.process else None,
    }
    settings.state_file.write_text(json.dumps(state))
    print(
        f"Agent Receipts is up.\n"
        f"  Kafka     {settings.kafka_bootstrap}  (publish to '{settings.topic}', bad input lands in "
        f"'{settings.dlq_topic}')\n"
        f"  Postgres  {settings.database_url}\n"
        f"  HTTP API  {http}  (Authorization: Bearer TOKEN; OpenAPI: {http}/openapi.json)\n"
        f"  Console   {http}/ui  (sign in with the token)\n"
        f"  Data      {settings.data_dir.resolve()}\n"
        + (
            f"  Token     {settings.token_file.resolve()}  (the CLI uses it)\n"
            if settings.token_file.exists()
            else ""
        )
        + "In another terminal, same directory: ./receipts demo, then ./receipts show demo-lead-followup",
        flush=True,
    )


def _take_over(settings: Settings) -> None:
    """Refuse when a live `up` runs here; otherwise stop what a dead one left running.

    The parent-death signals should have stopped its servers already; this is the
    belt to those braces (and covers a state file from an older version)."""
    state: dict[str, Any] = {}
    if settings.state_file.exists():
        state = json.loads(settings.state_file.read_text())
        pid = state.get("pid")
        if _alive(pid):
            raise NotRunning(
                f"`receipts up` is already running here (pid {pid}); stop it first or use another "
                "RECEIPTS_DATA_DIR"
            )
    owner = f"a `receipts up` (pid {state.get('pid')}) that died" if state else "an earlier `receipts up`"
    broker_pid = state.get("broker_pid")
    if broker_pid and stop_broker_pid(int(broker_pid)):
        log.warning("stopped the Kafka broker (pid %s) left running by %s", broker_pid, owner)
    if not settings.database_url:
        postmaster = stop_postmaster(settings.data_dir / "pg")
        if postmaster is not None:
            log.warning("stopped the PostgreSQL (pid %s) left running by %s", postmaster, owner)
    settings.state_file.unlink(missing_ok=True)


def _alive(pid: object) -> bool:
    try:
        return bool(psutil.Process(int(str(pid))).status() != psutil.STATUS_ZOMBIE)
    except (psutil.Error, TypeError, ValueError):
        return False
