"""One place for configuration: environment variables prefixed RECEIPTS_."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Literal

from psycopg.conninfo import conninfo_to_dict
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from domain.errors import Unavailable


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RECEIPTS_", extra="ignore")

    # External servers; when unset, the ones `receipts up` started are used.
    database_url: str | None = None
    kafka_bootstrap: str | None = None
    # Where the embedded PostgreSQL keeps its data and `up` leaves its address.
    data_dir: Path = Path(".receipts")
    database_schema: str = "public"
    # The CLI's API token (who is asking); unset: the one `up` wrote to `token_file`.
    token: SecretStr | None = None

    topic: str = "agent-steps"
    partitions: int = 4
    group: str = "receipts-ingest"
    encoding: Literal["avro", "json"] = "avro"
    # Live path: the 500 ms default alone spends the publish->receipt budget.
    fetch_max_wait_ms: int = 20
    max_poll_records: int = 2000
    # Under a backlog, polls are topped up to this many events per transaction.
    max_batch: int = 8000
    # How fast the group notices a dead consumer and hands its partitions on.
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 1_000
    # How often a running consumer checks that its stored positions still name
    # records in the broker's log (a broker restarted or a topic recreated under it).
    position_check_seconds: float = 30.0
    # Runs whose head (version, digest, event ids: ~2 KB) stays in memory; others
    # are read back from PostgreSQL when their next event arrives.
    head_cache_runs: int = 10_000
    # Personal-data fields (the policy's [personal_data]) stored encrypted under their
    # subject's key, so `receipts erase` can destroy them. Off: stored as received
    # (the ingest bench's baseline; RECEIPTS_PERSONAL_DATA=off).
    personal_data: bool = True
    # Log entries the projections apply per transaction.
    projection_page: int = 5000
    # A run with no run.finished this long after its last step is reported as
    # `final_state_unclear`.
    unfinished_after_seconds: float = 3600.0
    # The HTTP API that `receipts up` / `receipts serve` start.
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    # /health is degraded when a view is more than this many events behind the
    # event store and its oldest unapplied step has waited this many seconds.
    health_lag_events: int = 0
    health_lag_seconds: float = 30.0
    # Requests that may wait at once for `after_event` (past it: 503, Retry-After).
    max_waiters: int = 64
    # `up` restarts a child (ingest, project, serve, the embedded servers) that
    # exits unexpectedly, after a wait that doubles from the first to the most;
    # a child that had run `restart_healthy_after_seconds` starts from the first
    # again. More than `restart_limit` restarts of one child within
    # `restart_window_seconds` and `up` gives up: it stops and exits non-zero.
    restart_backoff_seconds: float = 1.0
    restart_backoff_max_seconds: float = 30.0
    restart_healthy_after_seconds: float = 60.0
    restart_limit: int = 10
    restart_window_seconds: float = 300.0
    # The routing policy (TOML) put in force when ingest starts; unset: the shipped
    # sample. A running ingest picks up a version published since (`receipts policy
    # publish`) within `policy_check_seconds`.
    policy: Path | None = None
    policy_check_seconds: float = 5.0
    # How often `receipts relay` records `action.expired` for steps past their lane deadline.
    deadline_check_seconds: float = 5.0
    # An ingest consumer with no partitions this long (while the broker answers)
    # leaves its group and joins again as a new member.
    join_timeout_seconds: float = 30.0
    # The rollback targets (TOML: [targets.SYSTEM] adapter = git|webhook|correction);
    # unset: the rollback worker has no adapter and records every reverse event as failed.
    rollback: Path | None = None
    # The service's Ed25519 key (PEM PKCS#8, infra/signing.py), a file the database does
    # not hold; unset: `signing.key` in the data dir, which `receipts up` creates.
    signing_key: Path | None = None
    # `receipts relay` closes a signed checkpoint over the log this often, or sooner once
    # this many events wait (infra/checkpoints.py).
    checkpoint_seconds: float = 10.0
    checkpoint_events: int = 100_000

    @property
    def unfinished_after(self) -> timedelta:
        return timedelta(seconds=self.unfinished_after_seconds)

    @property
    def dlq_topic(self) -> str:
        return f"{self.topic}.dlq"

    @property
    def decisions_topic(self) -> str:
        return f"{self.topic}.decisions"

    @property
    def reverse_topic(self) -> str:
        return f"{self.topic}.reverse"

    @property
    def checkpoints_topic(self) -> str:
        return f"{self.topic}.checkpoints"

    @property
    def rollback_group(self) -> str:
        """The rollback worker's consumer group: its own, beside ingest's."""
        return f"{self.group}.rollback"

    @property
    def all_topics(self) -> list[str]:
        return [self.topic, self.dlq_topic, self.decisions_topic, self.reverse_topic]

    @property
    def state_file(self) -> Path:
        return self.data_dir / "up.json"

    @property
    def token_file(self) -> Path:
        """Where `up` leaves the local admin's token (mode 0600) for the CLI."""
        return self.data_dir / "token"

    @property
    def signing_key_file(self) -> Path:
        return self.signing_key or self.data_dir / "signing.key"

    def resolved(self) -> Settings:
        """Fill unset servers from what a running `receipts up` wrote down."""
        if self.database_url and self.kafka_bootstrap:
            return self
        if not self.state_file.exists():
            missing = [
                name
                for name, value in (
                    ("RECEIPTS_DATABASE_URL", self.database_url),
                    ("RECEIPTS_KAFKA_BOOTSTRAP", self.kafka_bootstrap),
                )
                if not value
            ]
            raise NotRunning(
                f"no servers to talk to: {' and '.join(missing)} not set and no `receipts up` "
                f"is running from {self.data_dir.resolve()}. Start `./receipts up` in another "
                "terminal (same directory), or set those variables."
            )
        state = json.loads(self.state_file.read_text())
        return self.model_copy(
            update={
                "database_url": self.database_url or state["database_url"],
                "kafka_bootstrap": self.kafka_bootstrap or state["kafka_bootstrap"],
            }
        )

    def eventsourcing_env(self) -> dict[str, str]:
        """The database URL in the variables eventsourcing's PostgreSQL factory reads."""
        if not self.database_url:
            raise NotRunning("RECEIPTS_DATABASE_URL is not set")
        parts = conninfo_to_dict(self.database_url)
        return {
            "POSTGRES_DBNAME": str(parts.get("dbname") or "postgres"),
            "POSTGRES_HOST": str(parts.get("host") or "localhost"),
            "POSTGRES_PORT": str(parts.get("port") or "5432"),
            "POSTGRES_USER": str(parts.get("user") or "postgres"),
            "POSTGRES_PASSWORD": str(parts.get("password") or ""),
            "POSTGRES_SCHEMA": self.database_schema,
            "POSTGRES_POOL_SIZE": "4",
        }


class NotRunning(Unavailable, RuntimeError):
    """No database or broker is configured or running."""
