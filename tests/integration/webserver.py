"""Start a real ``dagster-webserver`` (or ``dagster dev``) on 127.0.0.1 and talk GraphQL to it.

Used by the integration tests and by ``scripts/ui_screenshot.py``. The server runs in a
process group of its own (``start_new_session``) so that stopping it also stops what it
started: the code server it launches for the workspace's location, and under ``dagster dev``
the daemon.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import psutil

#: Variables the server must not inherit from the caller's shell: the caller states them.
INHERITED_PREFIXES_DROPPED = ("PARITY_", "SUPABASE_", "DAGSTER_")

LOCATION_STATUS_QUERY = """
query LocationStatus {
  workspaceOrError {
    __typename
    ... on PythonError { message stack }
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError {
          __typename
          ... on PythonError { message stack causes { message stack } }
        }
      }
    }
  }
}
"""


class WebserverError(RuntimeError):
    """The webserver did not start, its code location failed to load, or a query failed.
    The message carries the server's output."""


def free_port() -> int:
    """A port that was free a moment ago (the server binds it shortly after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_env(env: Mapping[str, str]) -> dict[str, str]:
    """The caller's environment without Parity's, Supabase's and Dagster's variables, plus
    ``env``: the server sees exactly the configuration the caller chose."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(INHERITED_PREFIXES_DROPPED)}
    return {**base, **env}


@dataclass
class Webserver:
    url: str
    process: subprocess.Popen
    log_path: Path

    def output(self, limit: int = 20_000) -> str:
        """The tail of the server's combined stdout and stderr."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return text[-limit:]

    def get(self, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=timeout) as response:  # noqa: S310
                return response.status, response.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def graphql(
        self, query: str, variables: Mapping[str, Any] | None = None, timeout: float = 30.0
    ) -> dict[str, Any]:
        """POST /graphql; the ``data`` of the answer. GraphQL errors raise with the query's
        errors, so a field the schema lacks fails loudly instead of reading as null."""
        body = json.dumps({"query": query, "variables": dict(variables or {})}).encode()
        request = urllib.request.Request(
            self.url + "/graphql",
            data=body,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
                answer = json.loads(response.read())
        except urllib.error.HTTPError as err:
            raise WebserverError(
                f"POST /graphql answered {err.code}: {err.read()[:2000]!r}"
            ) from None
        if answer.get("errors"):
            raise WebserverError(f"GraphQL errors: {json.dumps(answer['errors'], indent=1)}")
        return answer["data"]

    def wait_until_loaded(self, timeout: float) -> list[dict[str, Any]]:
        """Poll until the server answers and every code location is LOADED; the location
        entries. Raises with the load error and the server's output otherwise."""
        deadline = time.monotonic() + timeout
        last: str = "no answer yet"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise WebserverError(
                    f"the webserver exited with {self.process.returncode} before its code "
                    f"location loaded:\n{self.output()}"
                )
            try:
                status, _ = self.get("/server_info", timeout=5)
                if status == 200:
                    data = self.graphql(LOCATION_STATUS_QUERY, timeout=10)
                    workspace = data["workspaceOrError"]
                    if workspace["__typename"] == "PythonError":
                        raise WebserverError(
                            f"workspace failed to load: {workspace['message']}\n"
                            f"{''.join(workspace['stack'])}\n{self.output()}"
                        )
                    entries = workspace["locationEntries"]
                    for entry in entries:
                        error = entry["locationOrLoadError"]
                        if error and error["__typename"] == "PythonError":
                            causes = "".join(
                                f"caused by: {c['message']}{''.join(c['stack'])}"
                                for c in error["causes"]
                            )
                            raise WebserverError(
                                f"code location {entry['name']!r} failed to load: "
                                f"{error['message']}{''.join(error['stack'])}{causes}\n"
                                f"server output:\n{self.output()}"
                            )
                    if entries and all(
                        e["loadStatus"] == "LOADED" and e["locationOrLoadError"] for e in entries
                    ):
                        return entries
                    last = f"locations: {[(e['name'], e['loadStatus']) for e in entries]}"
                else:
                    last = f"/server_info answered {status}"
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as err:
                last = f"{type(err).__name__}: {err}"
            time.sleep(0.25)
        raise WebserverError(
            f"the webserver's code location did not load within {timeout:.0f} s ({last}):\n"
            f"{self.output()}"
        )


def _command(kind: str) -> list[str]:
    """The console script next to this interpreter (the same environment), else ``-m``."""
    bindir = Path(sys.executable).parent
    if kind == "webserver":
        script = bindir / "dagster-webserver"
        return [str(script)] if script.exists() else [sys.executable, "-m", "dagster_webserver"]
    if kind == "dev":
        script = bindir / "dagster"
        return [str(script), "dev"] if script.exists() else [sys.executable, "-m", "dagster", "dev"]
    raise ValueError(f"kind={kind!r}: expected 'webserver' or 'dev'")


def stop_process_group(process: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM the process group (the server and what it started), wait, then SIGKILL what
    is left, including descendants that moved to a group of their own."""
    try:
        descendants = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        descendants = []
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    _, alive = psutil.wait_procs(descendants, timeout=max(1.0, grace_s / 2))
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)
    if process.poll() is None:
        process.wait(timeout=5)


@contextmanager
def running_webserver(
    workspace: Path,
    env: Mapping[str, str],
    *,
    log_dir: Path,
    cwd: Path | None = None,
    kind: Literal["webserver", "dev"] = "webserver",
    timeout: float = 120.0,
    extra_args: Sequence[str] = (),
) -> Iterator[Webserver]:
    """Run ``dagster-webserver -w <workspace>`` (``kind="webserver"``) or ``dagster dev -w
    <workspace>`` (``kind="dev"``, webserver and daemon) on a free 127.0.0.1 port with
    ``env`` over a cleaned copy of this environment (see :func:`server_env`); yield once every
    code location is LOADED; stop the whole process group on exit, whatever happened.

    ``log_dir`` receives the server's output (``webserver.log``), quoted in every error.
    """
    home = env.get("DAGSTER_HOME")
    if home and log_dir.absolute().is_relative_to(Path(home).absolute() / "logs"):
        # Dagster's telemetry uploader empties $DAGSTER_HOME/logs.
        raise ValueError(f"log_dir {log_dir} is under $DAGSTER_HOME/logs, which Dagster empties")
    log_dir.mkdir(parents=True, exist_ok=True)
    attempts = 3  # the free port can be taken between choosing and binding it
    for attempt in range(1, attempts + 1):
        port = free_port()
        log_path = log_dir / f"webserver-{port}.log"
        argv = [
            *_command(kind),
            "-w",
            str(workspace),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            *extra_args,
        ]
        with log_path.open("wb") as log:
            process = subprocess.Popen(  # noqa: S603
                argv,
                cwd=cwd or workspace.parent,
                env=server_env(env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        server = Webserver(f"http://127.0.0.1:{port}", process, log_path)
        try:
            server.wait_until_loaded(timeout)
        except WebserverError:
            stop_process_group(process)
            if attempt < attempts and "address already in use" in server.output().lower():
                continue
            raise
        except BaseException:
            stop_process_group(process)
            raise
        try:
            yield server
        finally:
            stop_process_group(process)
        return
