"""Throwaway PostgreSQL and Azurite servers for the test session.

The tests exercise the migration against real services, not mocks: a PostgreSQL 15 started
from the server binaries on the machine, and Azurite (the Azure Storage emulator, pinned in
package.json and installed into ``node_modules`` by ``make``) standing in for Azure Data Lake
Storage. Each server listens on 127.0.0.1 only, on a free port chosen at start, and lives in
its own folder under /tmp, so a server left behind by a killed run never blocks the next one;
such leftovers are also cleaned up at the next start.

A service that cannot be started raises :class:`ServiceUnavailable`; the fixtures in
``conftest.py`` turn that into a skip on a developer's machine and into a failure in CI
(``CI=true``), where every test must really run.

Environment overrides:

``LLM_OBS_PG_BIN``
    folder holding ``initdb`` and ``pg_ctl``; when set, no other folder is searched.
``LLM_OBS_AZURITE_BIN``
    the ``azurite-blob`` (or ``azurite``) executable; when set, no other is searched.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

#: The well-known account of every Azurite and Azure Storage emulator (documented by Microsoft).
AZURITE_ACCOUNT_NAME = "devstoreaccount1"
AZURITE_ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

PG_SUPERUSER = "postgres"
PG_START_TIMEOUT_S = 60.0
AZURITE_START_TIMEOUT_S = 60.0
LOG_TAIL_LINES = 40

_PG_DIR_PREFIX = "llm-obs-pg-"
_AZURITE_DIR_PREFIX = "llm-obs-azurite-"
_OWNER_FILE = "owner.pid"  # pid of the test process that started the server in this folder
_SERVER_PID_FILE = "server.pid"


class ServiceUnavailable(RuntimeError):
    """A test service could not be found or started; the message says why and shows its log."""


def running_in_ci() -> bool:
    """True when ``CI`` says so (``true``, ``1``, ``yes``): then no service may be skipped."""
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


# --------------------------------------------------------------------------------------------
# small helpers


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the caller retries if it is taken meanwhile)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def port_answers(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    tail = text.splitlines()[-lines:]
    return "\n".join(tail) if tail else f"(empty log at {path})"


def _service_root() -> str:
    """Folder for the servers' working folders.

    Directly under /tmp: when the tests run as root, PostgreSQL runs as ``postgres``, which must
    traverse it (pytest's ``tmp_path`` lives under /tmp/pytest-of-root, mode 700); a short path
    also keeps the unix socket path under its 107-byte limit.
    """
    return "/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir()


def _process_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting to be reaped does not count)."""
    try:
        import psutil

        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except ImportError:
        pass
    except Exception:  # noqa: BLE001 - psutil.NoSuchProcess and kin
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _process_refers_to(pid: int, folder: str) -> bool:
    """Whether process ``pid`` still is the server we started in ``folder`` (pids get reused):
    ``folder`` is in its command line or is its working folder."""
    try:
        import psutil

        process = psutil.Process(pid)
        return folder in " ".join(process.cmdline()) or process.cwd() == folder
    except Exception:  # noqa: BLE001 - gone, or not ours to inspect: leave it alone
        return False


def _stale_folders(prefix: str) -> list[Path]:
    """Working folders of earlier runs whose test process has died (killed, not torn down)."""
    stale = []
    for folder in glob.glob(os.path.join(_service_root(), prefix + "*")):
        owner = _read_pid(Path(folder) / _OWNER_FILE)
        if owner is not None and owner != os.getpid() and not _process_alive(owner):
            stale.append(Path(folder))
    return stale


def _make_workdir(prefix: str, owner_user: pwd.struct_passwd | None) -> Path:
    workdir = Path(tempfile.mkdtemp(prefix=prefix, dir=_service_root()))
    (workdir / _OWNER_FILE).write_text(f"{os.getpid()}\n")
    if owner_user is not None:
        os.chown(workdir, owner_user.pw_uid, owner_user.pw_gid)
    return workdir


# --------------------------------------------------------------------------------------------
# PostgreSQL


def find_pg_bin() -> Path:
    """The folder with ``initdb`` and ``pg_ctl`` (and ``postgres`` beside them).

    ``LLM_OBS_PG_BIN`` if set; otherwise the folder of ``initdb`` on PATH (symlinks resolved, as
    Debian puts /usr/local/bin/initdb -> /usr/lib/postgresql/15/bin/initdb), then the newest
    /usr/lib/postgresql/*/bin or /usr/pgsql-*/bin.
    """
    override = os.environ.get("LLM_OBS_PG_BIN")
    if override:
        candidates = [Path(override)]
    else:
        candidates = []
        on_path = shutil.which("initdb")
        if on_path:
            candidates.append(Path(on_path).resolve().parent)
            candidates.append(Path(on_path).parent)

        def version_key(folder: str) -> tuple[int, ...]:
            return tuple(int(n) for n in re.findall(r"\d+", folder)) or (0,)

        for pattern in ("/usr/lib/postgresql/*/bin", "/usr/pgsql-*/bin"):
            candidates += [
                Path(p) for p in sorted(glob.glob(pattern), key=version_key, reverse=True)
            ]
    for folder in candidates:
        if all(os.access(folder / tool, os.X_OK) for tool in ("initdb", "pg_ctl")):
            return folder
    searched = ", ".join(str(c) for c in candidates) or "PATH"
    where = "LLM_OBS_PG_BIN" if override else "PATH and the usual install folders"
    raise ServiceUnavailable(
        f"PostgreSQL server binaries (initdb, pg_ctl) not found in {where} (searched: {searched}); "
        "install the PostgreSQL 15 server (Debian: apt-get install postgresql-15) "
        "or point LLM_OBS_PG_BIN at its bin folder"
    )


def _postgres_user() -> pwd.struct_passwd | None:
    """The account the server runs as: ``postgres`` when we are root (initdb refuses root)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError as err:
        raise ServiceUnavailable(
            "running as root, and PostgreSQL refuses to run as root, but there is no `postgres` "
            "user to run it as (Debian's postgresql package creates one)"
        ) from err


def _as_user(argv: list[str], user: pwd.struct_passwd | None) -> list[str]:
    if user is None:
        return argv
    runuser = shutil.which("runuser") or next(
        (p for p in ("/usr/sbin/runuser", "/sbin/runuser") if os.access(p, os.X_OK)), None
    )
    if runuser:
        return [runuser, "-u", user.pw_name, "--", *argv]
    su = shutil.which("su") or "/bin/su"
    return [su, user.pw_name, "-s", "/bin/sh", "-c", shlex.join(argv)]


@dataclass
class PostgresServer:
    """A running throwaway PostgreSQL; databases are created on demand, all trust-authenticated.

    URLs are SQLAlchemy URLs: ``postgresql+psycopg://postgres@127.0.0.1:PORT/DBNAME``.
    """

    port: int
    workdir: Path
    bin_dir: Path
    run_as: pwd.struct_passwd | None = None
    host: str = "127.0.0.1"
    user: str = PG_SUPERUSER
    version: str = ""
    _stopped: bool = field(default=False, repr=False)

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def socket_dir(self) -> Path:
        return self.workdir / "socket"

    @property
    def log_path(self) -> Path:
        return self.workdir / "postgres.log"

    @property
    def admin_url(self) -> str:
        """URL of the maintenance database ``postgres``; tests should use their own database."""
        return self.url("postgres")

    def url(self, dbname: str = "postgres", driver: str = "psycopg") -> str:
        """SQLAlchemy URL of ``dbname``; ``driver=""`` gives a plain ``postgresql://`` URL."""
        scheme = f"postgresql+{driver}" if driver else "postgresql"
        return f"{scheme}://{self.user}@{self.host}:{self.port}/{dbname}"

    def dsn(self, dbname: str = "postgres") -> str:
        """libpq connection string, for psycopg, ADBC or psql."""
        return f"host={self.host} port={self.port} user={self.user} dbname={dbname}"

    def _admin_connection(self):
        import psycopg

        return psycopg.connect(self.dsn("postgres"), autocommit=True, connect_timeout=10)

    def create_database(self, name: str | None = None) -> str:
        """Create an empty UTF-8 database and return its SQLAlchemy URL.

        ``name`` is used as given (letters, digits and ``_``, at most 63 characters, and it must
        not exist yet); without it a unique name ``t_<hex>`` is made.
        """
        from psycopg import sql

        name = name or f"t_{uuid.uuid4().hex[:16]}"
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", name):
            raise ValueError(f"not a plain database name: {name!r}")
        with self._admin_connection() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop ``name``, closing whatever connections are still open to it."""
        from psycopg import sql

        with self._admin_connection() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    def _run(self, argv: list[str], timeout: float) -> subprocess.CompletedProcess:
        return subprocess.run(
            _as_user(argv, self.run_as),
            cwd=self.workdir,  # a folder the server's user may enter (not root's home)
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def stop(self) -> None:
        """Stop the server (fast shutdown, then SIGKILL) and delete its folder. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        try:
            if (self.data_dir / "postmaster.pid").exists():
                # A stop that hangs is followed by SIGKILL below.
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._run(
                        [
                            str(self.bin_dir / "pg_ctl"),
                            "-D",
                            str(self.data_dir),
                            "-m",
                            "fast",
                            "-w",
                            "-t",
                            "30",
                            "stop",
                        ],
                        timeout=45,
                    )
                _kill_postmaster(self.data_dir)
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _kill_postmaster(data_dir: Path) -> None:
    """End the postmaster of ``data_dir`` if it still runs (checked by its command line):
    SIGQUIT (immediate shutdown, which still releases shared memory), then SIGKILL."""
    pid = _read_pid(data_dir / "postmaster.pid")
    if not pid or not _process_alive(pid) or not _process_refers_to(pid, str(data_dir)):
        return
    for sig in (signal.SIGQUIT, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + 10
        while _process_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not _process_alive(pid):
            return


def _cleanup_stale_postgres() -> None:
    for folder in _stale_folders(_PG_DIR_PREFIX):
        _kill_postmaster(folder / "data")
        shutil.rmtree(folder, ignore_errors=True)


def start_postgres(attempts: int = 3) -> PostgresServer:
    """initdb + pg_ctl start a fresh server on 127.0.0.1 and a free port; wait until it answers.

    Raises :class:`ServiceUnavailable` with the reason and the server log's tail.
    """
    bin_dir = find_pg_bin()
    run_as = _postgres_user()
    _cleanup_stale_postgres()
    last_error: ServiceUnavailable | None = None
    for _ in range(attempts):  # another process may grab the free port before the server does
        server = PostgresServer(
            port=free_port(),
            workdir=_make_workdir(_PG_DIR_PREFIX, run_as),
            bin_dir=bin_dir,
            run_as=run_as,
        )
        try:
            _initdb_and_start(server)
            return server
        except ServiceUnavailable as err:
            last_error = err
            server.stop()
        except BaseException:
            server.stop()
            raise
    assert last_error is not None
    raise last_error


def _initdb_and_start(server: PostgresServer) -> None:
    server.socket_dir.mkdir()
    if server.run_as is not None:
        os.chown(server.socket_dir, server.run_as.pw_uid, server.run_as.pw_gid)

    initdb = server._run(
        [
            str(server.bin_dir / "initdb"),
            "-D",
            str(server.data_dir),
            "-U",
            server.user,
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ],
        timeout=120,
    )
    if initdb.returncode != 0:
        raise ServiceUnavailable(
            f"initdb failed (exit {initdb.returncode}):\n"
            f"{initdb.stdout[-2000:]}{initdb.stderr[-2000:]}"
        )
    version = server._run([str(server.bin_dir / "pg_ctl"), "--version"], timeout=30)
    server.version = version.stdout.strip()

    # Settings go into postgresql.conf, not through `pg_ctl -o`, to stay clear of quoting.
    settings = {
        "listen_addresses": "'127.0.0.1'",
        "port": str(server.port),
        "unix_socket_directories": f"'{server.socket_dir}'",
        "max_connections": "200",
        "fsync": "off",  # a throwaway server: durability buys nothing, costs seconds
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "timezone": "'UTC'",
        "log_timezone": "'UTC'",
    }
    with open(server.data_dir / "postgresql.conf", "a") as conf:
        conf.write("\n# llm_observatory_tests.services\n")
        conf.writelines(f"{key} = {value}\n" for key, value in settings.items())

    log = server.log_path
    log.touch()
    if server.run_as is not None:
        os.chown(log, server.run_as.pw_uid, server.run_as.pw_gid)
    try:
        started = server._run(
            [
                str(server.bin_dir / "pg_ctl"),
                "-D",
                str(server.data_dir),
                "-l",
                str(log),
                "-w",
                "-t",
                str(int(PG_START_TIMEOUT_S)),
                "start",
            ],
            timeout=PG_START_TIMEOUT_S + 15,
        )
    except subprocess.TimeoutExpired as err:
        raise ServiceUnavailable(
            f"pg_ctl start did not return within {PG_START_TIMEOUT_S:.0f}s; log:\n{log_tail(log)}"
        ) from err
    if started.returncode != 0:
        raise ServiceUnavailable(
            f"pg_ctl start failed (exit {started.returncode}): {started.stderr.strip()}\n"
            f"server log ({log}):\n{log_tail(log)}"
        )
    _wait_for_postgres(server)


def _wait_for_postgres(server: PostgresServer) -> None:
    import psycopg

    deadline = time.monotonic() + PG_START_TIMEOUT_S
    while True:
        try:
            with psycopg.connect(server.dsn("postgres"), connect_timeout=5) as conn:
                conn.execute("SELECT 1")
            return
        except psycopg.OperationalError as err:
            if time.monotonic() > deadline:
                raise ServiceUnavailable(
                    f"PostgreSQL on 127.0.0.1:{server.port} accepts no connection: {err}\n"
                    f"server log:\n{log_tail(server.log_path)}"
                ) from err
            time.sleep(0.2)


# --------------------------------------------------------------------------------------------
# Azurite


def find_azurite() -> list[str]:
    """The command that runs Azurite's blob service, installed by ``make`` into node_modules."""
    override = os.environ.get("LLM_OBS_AZURITE_BIN")
    if override:
        candidates = [Path(override)]
    else:
        bin_dir = REPO_ROOT / "node_modules" / ".bin"
        candidates = [bin_dir / "azurite-blob", bin_dir / "azurite"]
    executable = next((c for c in candidates if os.access(c, os.X_OK)), None)
    if executable is None:
        raise ServiceUnavailable(
            "Azurite not found (looked for "
            + ", ".join(str(c) for c in candidates)
            + "); run `make node_modules` (npm ci) or point LLM_OBS_AZURITE_BIN at azurite-blob"
        )
    if shutil.which("node") is None:
        raise ServiceUnavailable(f"found {executable}, but `node` is not on PATH to run it")
    return [str(executable)]


@dataclass
class AzuriteServer:
    """A running Azurite blob service holding the emulator's well-known account.

    Data Lake (``abfs://``) clients reach it through ``blob_endpoint``: delta-rs with
    :attr:`storage_options`, adlfs / azure-storage-blob with :attr:`connection_string`.
    """

    port: int
    workdir: Path
    process: subprocess.Popen
    host: str = "127.0.0.1"
    account_name: str = AZURITE_ACCOUNT_NAME
    account_key: str = AZURITE_ACCOUNT_KEY
    _stopped: bool = field(default=False, repr=False)

    @property
    def blob_endpoint(self) -> str:
        return f"http://{self.host}:{self.port}/{self.account_name}"

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={self.account_name};"
            f"AccountKey={self.account_key};BlobEndpoint={self.blob_endpoint};"
        )

    @property
    def storage_options(self) -> dict[str, str]:
        """delta-rs (``deltalake``) storage options for this emulator."""
        return {
            "account_name": self.account_name,
            "account_key": self.account_key,
            "azure_endpoint": self.blob_endpoint,
            "allow_http": "true",
        }

    @property
    def env(self) -> dict[str, str]:
        """The ``AZURE_STORAGE_*`` variables (README, Configuration) for a subprocess (CLI
        tests)."""
        return {
            "AZURE_STORAGE_CONNECTION_STRING": self.connection_string,
            "AZURE_STORAGE_ACCOUNT_NAME": self.account_name,
            "AZURE_STORAGE_ACCOUNT_KEY": self.account_key,
        }

    @property
    def log_path(self) -> Path:
        return self.workdir / "azurite.log"

    @property
    def debug_log_path(self) -> Path:
        """Azurite's debug log, written when started with ``request_log=True``: every request's
        method, URL and headers (Content-Length of each upload) and every response's headers
        (Content-Length of each download) and listing body, by request id."""
        return self.workdir / "debug.log"

    def abfs_url(self, container: str, path: str = "") -> str:
        """``abfs://container@devstoreaccount1.dfs.core.windows.net/path`` (path without a
        leading slash); delta-rs sends its requests to ``blob_endpoint`` given storage_options."""
        return f"abfs://{container}@{self.account_name}.dfs.core.windows.net/{path.lstrip('/')}"

    def create_container(self, prefix: str = "test") -> str:
        """Create a new, empty container and return its name (``<prefix>-<12 hex>``)."""
        from azure.storage.blob import BlobServiceClient

        cleaned = re.sub(r"[^a-z0-9]+", "-", prefix.lower()).strip("-")[:40] or "test"
        name = f"{cleaned}-{uuid.uuid4().hex[:12]}"
        with BlobServiceClient.from_connection_string(self.connection_string) as client:
            client.create_container(name)
        return name

    def stop(self) -> None:
        """Stop Azurite (SIGTERM, then SIGKILL) and delete its folder. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        try:
            _terminate(self.process)
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _terminate(process: subprocess.Popen, grace_s: float = 10.0) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)  # its own session: node and any children
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=grace_s)


def _cleanup_stale_azurite() -> None:
    for folder in _stale_folders(_AZURITE_DIR_PREFIX):
        pid = _read_pid(folder / _SERVER_PID_FILE)
        if pid and _process_alive(pid) and _process_refers_to(pid, str(folder)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(folder, ignore_errors=True)


def start_azurite(attempts: int = 3, *, request_log: bool = False) -> AzuriteServer:
    """Start Azurite's blob service on 127.0.0.1 and a free port; wait until the port answers.

    ``request_log=True`` keeps the access log (each request in ``log_path``, a GET with its
    response bytes) and writes the debug log (``debug_log_path``), from which the bytes moved
    each way are counted; it grows by about 5 KB per request.

    Raises :class:`ServiceUnavailable` with the reason and Azurite's output.
    """
    command = find_azurite()
    _cleanup_stale_azurite()
    last_error: ServiceUnavailable | None = None
    for _ in range(attempts):  # another process may grab the free port before Azurite does
        workdir = _make_workdir(_AZURITE_DIR_PREFIX, None)
        port = free_port()
        argv = [
            *command,
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(port),
            # Data in memory only: nothing to flush, nothing left behind. Azurite refuses
            # --location beside it; the working folder (cwd) holds only its output.
            "--inMemoryPersistence",
            "--skipApiVersionCheck",  # the Python SDKs may be newer than the emulator
            "--loose",
            *(["--debug", str(workdir / "debug.log")] if request_log else ["--silent"]),
            # Telemetry is on by default and would call out to the internet at every start.
            "--disableTelemetry",
        ]
        log = workdir / "azurite.log"
        with open(log, "wb") as log_file:
            process = subprocess.Popen(
                argv,
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        (workdir / _SERVER_PID_FILE).write_text(f"{process.pid}\n")
        server = AzuriteServer(port=port, workdir=workdir, process=process)
        try:
            _wait_for_azurite(server, argv)
            return server
        except ServiceUnavailable as err:
            last_error = err
            server.stop()
        except BaseException:
            server.stop()
            raise
    assert last_error is not None
    raise last_error


def _wait_for_azurite(server: AzuriteServer, argv: list[str]) -> None:
    deadline = time.monotonic() + AZURITE_START_TIMEOUT_S
    while not port_answers(server.host, server.port):
        exit_code = server.process.poll()
        if exit_code is not None or time.monotonic() > deadline:
            status = (
                f"exited with {exit_code}"
                if exit_code is not None
                else (f"did not listen within {AZURITE_START_TIMEOUT_S:.0f}s")
            )
            raise ServiceUnavailable(
                f"Azurite {status} ({shlex.join(argv)}); output:\n{log_tail(server.log_path)}"
            )
        time.sleep(0.1)
