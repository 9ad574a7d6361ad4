"""A real PostgreSQL for tests: one throwaway cluster per test session (Debian's ``initdb`` and
``pg_ctl``, run as user ``postgres`` when the tests run as root), serving on a free loopback
port with trust authentication, and a fresh database per test.

Import the fixtures a test module uses (pytest finds fixtures by the names in the module)::

    from tests.integration.postgres_server import (  # noqa: F401 (fixtures)
        postgres_database_url,
        postgres_url,
        store_url,
    )

- ``postgres_url`` (session): the superuser's URL of the cluster's ``postgres`` database.
- ``postgres_database_url``: an empty database for one test (emptied again for the next).
- ``store_url``: the contract suite's backend, parametrized: a SQLite file, then a PostgreSQL
  database; every test using it runs against both.

Under ``CI=true`` a missing PostgreSQL fails the test; elsewhere it skips with the reason (see
:func:`tests.conftest.require_binary`).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from driftowner.store import MemoryStore, SqlStore, Store

START_TIMEOUT = 30
"""Seconds ``pg_ctl`` waits for the server to accept connections (and to stop)."""

PASSWORD_ROLE = "driftowner_pw"
"""The one role that must give a password (scram-sha-256) over TCP; every other role is
trusted. Create it with a password to test password handling."""

TEST_DATABASE = "driftowner_test"
"""The database :func:`postgres_database_url` empties for each test."""

_START_ATTEMPTS = 3
_SERVER_USER = "postgres"
_HBA = f"""\
# Written by tests/integration/postgres_server.py: loopback and the socket only.
local all all trust
host all {PASSWORD_ROLE} 127.0.0.1/32 scram-sha-256
host all all 127.0.0.1/32 trust
"""


@dataclass(frozen=True)
class Cluster:
    """A running throwaway cluster."""

    port: int
    base: Path

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def database_url(self, name: str, user: str = "postgres", password: str = "") -> str:
        auth = f"{user}:{password}" if password else user
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{name}"


def require_postgres() -> Path:
    """The directory holding ``initdb`` and ``pg_ctl`` (the newest Debian PostgreSQL first).

    Under ``CI=true`` a missing PostgreSQL fails the test; elsewhere the test is skipped.
    """
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda path: int(path.parent.parent.name) if path.parent.parent.name.isdigit() else 0,
    )
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    if initdb is not None and shutil.which("pg_ctl") is not None:
        return Path(initdb).parent
    message = "initdb and pg_ctl are not installed (apt-get install postgresql)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@contextlib.contextmanager
def running_cluster() -> Iterator[Cluster]:
    """Create a cluster in a new directory under the system temp dir, start it, yield it,
    stop it and delete the directory.

    As root the server runs as user ``postgres`` (``initdb`` refuses root), so the directory
    is created under ``/tmp`` (not pytest's private ``tmp_path``) and handed to that user.

    Raises:
        pytest.fail.Exception: initdb failed, or the server did not start or stop within
            :data:`START_TIMEOUT` s (the message carries the server log's tail).
    """
    bindir = require_postgres()
    as_server_user = _as_server_user()
    base = Path(tempfile.mkdtemp(prefix="driftowner-pg-"))
    try:
        if as_server_user:
            server = pwd.getpwnam(_SERVER_USER)
            os.chown(base, server.pw_uid, server.pw_gid)
        data = base / "data"
        _run(
            [
                *as_server_user,
                str(bindir / "initdb"),
                "--pgdata",
                str(data),
                "--username=postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            what="initdb",
            timeout=120,
        )
        hba = data / "pg_hba.conf"
        hba.write_text(_HBA, encoding="utf-8")
        log_path = base / "server.log"
        port = _start(bindir, as_server_user, base, log_path)
        try:
            yield Cluster(port=port, base=base)
        finally:
            _stop(bindir, as_server_user, data, log_path)
    finally:
        shutil.rmtree(base, ignore_errors=True)


@dataclass
class _Shared:
    """The one cluster of this test process. Every module that imports the fixtures gets its
    own session fixture instance; they share the cluster, counted, and the last stops it."""

    stack: contextlib.ExitStack | None = None
    cluster: Cluster | None = None
    users: int = 0
    database_ready: bool = False


_shared = _Shared()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """The superuser URL of the throwaway cluster's ``postgres`` database, for the session."""
    if _shared.cluster is None:
        stack = contextlib.ExitStack()
        _shared.cluster = stack.enter_context(running_cluster())
        _shared.stack = stack
    _shared.users += 1
    try:
        yield _shared.cluster.url
    finally:
        _shared.users -= 1
        if _shared.users == 0 and _shared.stack is not None:
            stack, _shared.stack, _shared.cluster = _shared.stack, None, None
            _shared.database_ready = False
            stack.close()


@pytest.fixture
def postgres_database_url(postgres_url: str) -> Iterator[str]:
    """An empty database of the session's cluster for one test.

    One database serves the session, emptied before each test (its ``public`` schema dropped
    and recreated as ``initdb`` makes it, its owner reset) and cut off from any connection a
    test left open afterwards: as isolated as a new database, at a few milliseconds instead of
    the ~0.2 s a ``CREATE DATABASE`` costs.
    """
    url = postgres_url.rsplit("/", 1)[0] + f"/{TEST_DATABASE}"
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        if not _shared.database_ready:
            admin.execute(f"DROP DATABASE IF EXISTS {TEST_DATABASE} WITH (FORCE)")
            admin.execute(f"CREATE DATABASE {TEST_DATABASE}")
            _shared.database_ready = True
        _disconnect(admin)
        admin.execute(f"ALTER DATABASE {TEST_DATABASE} OWNER TO postgres")
    with psycopg.connect(url, autocommit=True) as owner:
        owner.execute("DROP SCHEMA IF EXISTS public CASCADE")
        owner.execute("CREATE SCHEMA public AUTHORIZATION pg_database_owner")
        owner.execute("GRANT USAGE ON SCHEMA public TO PUBLIC")
    yield url
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        _disconnect(admin)


def _disconnect(admin: psycopg.Connection[tuple[object, ...]]) -> None:
    """End every session on the test database (waiting up to 5 s for each to go)."""
    admin.execute(
        "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
        "WHERE datname = %s AND pid <> pg_backend_pid()",
        (TEST_DATABASE,),
    )


BACKENDS = ("memory", "sqlite", "postgresql")
"""The backends the store's contract suite runs on."""


@contextlib.contextmanager
def contract_store(request: pytest.FixtureRequest, sqlite_path: Path) -> Iterator[Store]:
    """An empty, opened store on the backend ``request.param`` names (one of
    :data:`BACKENDS`): a memory store, a SQLite file at ``sqlite_path``, or a fresh
    PostgreSQL database; closed on exit."""
    opened: Store
    if request.param == "memory":
        opened = MemoryStore()
    elif request.param == "sqlite":
        opened = SqlStore(f"sqlite:///{sqlite_path}")
    else:
        opened = SqlStore(request.getfixturevalue("postgres_database_url"))
    opened.open()
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty store on each backend of the contract suite: a SQLite file under
    ``tmp_path / "state"``, then a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state' / 'driftowner.db'}"
    url: str = request.getfixturevalue("postgres_database_url")
    return url


def _as_server_user() -> list[str]:
    """The command prefix that runs the server's programs as ``postgres`` when we are root."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam(_SERVER_USER)
    except KeyError:
        message = "running as root needs the user postgres (apt-get install postgresql)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    runuser = shutil.which("runuser")
    if runuser is None:
        pytest.fail("running as root needs runuser (util-linux) to start PostgreSQL as postgres")
    return [runuser, "-u", _SERVER_USER, "--"]


def _start(bindir: Path, as_server_user: list[str], base: Path, log_path: Path) -> int:
    """Start the server on a free loopback port (retrying when the port was taken between
    probing and binding); returns the port."""
    for attempt in range(_START_ATTEMPTS):
        port = _free_port()
        options = " ".join(
            [
                "-c listen_addresses=127.0.0.1",
                f"-c port={port}",
                f"-c unix_socket_directories={base}",
                # A throwaway cluster: durability is not tested here, speed is wanted.
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
            ]
        )
        started = subprocess.run(
            [
                *as_server_user,
                str(bindir / "pg_ctl"),
                "--pgdata",
                str(base / "data"),
                "--log",
                str(log_path),
                "--wait",
                "--timeout",
                str(START_TIMEOUT),
                "--options",
                options,
                "start",
            ],
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT + 10,
            check=False,
        )
        if started.returncode == 0:
            _wait_connectable(port, log_path)
            return port
        log = _tail(log_path)
        if attempt + 1 < _START_ATTEMPTS and re.search(r"could not (bind|create listen)", log):
            continue
        pytest.fail(
            f"PostgreSQL did not start on 127.0.0.1:{port} within {START_TIMEOUT}s "
            f"(pg_ctl exit {started.returncode}):\n{started.stdout}{started.stderr}\n{log}"
        )
    raise AssertionError("unreachable")


def _wait_connectable(port: int, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    last = ""
    while time.monotonic() < deadline:
        try:
            with psycopg.connect(
                f"postgresql://postgres@127.0.0.1:{port}/postgres", connect_timeout=2
            ) as conn:
                conn.execute("SELECT 1")
            return
        except psycopg.OperationalError as error:
            last = str(error)
            time.sleep(0.1)
    pytest.fail(f"PostgreSQL on port {port} refused connections ({last}):\n{_tail(log_path)}")


def _stop(bindir: Path, as_server_user: list[str], data: Path, log_path: Path) -> None:
    """Stop the server (fast shutdown: connections are cut); kill it if it will not stop."""
    stopped = subprocess.run(
        [
            *as_server_user,
            str(bindir / "pg_ctl"),
            "--pgdata",
            str(data),
            "--mode=fast",
            "--wait",
            "--timeout",
            str(START_TIMEOUT),
            "stop",
        ],
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT + 10,
        check=False,
    )
    if stopped.returncode == 0:
        return
    pid_file = data / "postmaster.pid"
    with contextlib.suppress(OSError, ValueError, IndexError):
        os.kill(int(pid_file.read_text().splitlines()[0]), signal.SIGKILL)
    pytest.fail(
        f"PostgreSQL did not stop within {START_TIMEOUT}s (killed it):\n"
        f"{stopped.stdout}{stopped.stderr}\n{_tail(log_path)}"
    )


def _run(command: list[str], *, what: str, timeout: float) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        pytest.fail(f"{what} failed (exit {done.returncode}):\n{done.stdout}{done.stderr}")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(no log: {exc})"
