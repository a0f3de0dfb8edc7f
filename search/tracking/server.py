"""`peftsweep tracking-server`: the team's MLflow tracking server, on a database, with artifacts proxied over HTTP.

A sweep's driver logs to it over HTTP (`tracking.uri: http://<host>:<port>`; workers report through Ray, never to
MLflow); artifacts (adapters, summaries, dashboards) are uploaded through the server to `--artifacts-destination`,
so the driver's node shares no filesystem with it.
Bound to 127.0.0.1 unless told otherwise. `--auth` serves MLflow's basic-auth app: every request needs a user and
password (sweeps send MLflow's own MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD); the admin's credentials come
from the environment (MLflow's MLFLOW_AUTH_ADMIN_USERNAME / MLFLOW_AUTH_ADMIN_PASSWORD) or a file, never the command
line, where any user of the machine could read them.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import tempfile
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from peftsweep.errors import UserError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerSettings:
    backend_store_uri: str  # postgresql://user:password@host:5432/db (or sqlite:///file.db for one machine)
    artifacts_destination: str  # a local directory or an object store URI (s3://...)
    host: str = "127.0.0.1"
    port: int = 5000
    workers: int = 2
    auth: bool = False  # MLflow's basic-auth app
    auth_credentials: str | None = None  # a file: `username: ...` and `password: ...` lines (else the environment)
    auth_db_uri: str | None = None  # users and permissions; default: the backend store (own tables)

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"


def redacted(uri: str) -> str:
    """The URI with its password hidden, for printing."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def check_backend(uri: str, timeout_s: int = 5) -> None:
    """Fail fast, in one line, when the database driver is missing or the database does not answer."""
    scheme = uri.split(":", 1)[0]
    if scheme.startswith("postgresql"):
        # SQLAlchemy 2.1 talks to postgresql:// through psycopg 3; postgresql+psycopg2:// asks for the old driver.
        driver = "psycopg2" if scheme.endswith("psycopg2") else "psycopg"
        try:
            __import__(driver)
        except ImportError:
            package = "psycopg2-binary" if driver == "psycopg2" else "'psycopg[binary]'"
            raise UserError(f"--backend-store-uri: PostgreSQL needs the {driver} driver: "
                            f"pip install 'peftsweep[cluster]' (or {package})") from None
    elif scheme not in ("sqlite", "mysql", "mysql+pymysql", "mssql"):
        raise UserError(f"--backend-store-uri: {redacted(uri)} is not a database URI "
                        f"(postgresql://user:password@host:5432/db)")
    if scheme == "sqlite":
        return
    import sqlalchemy

    engine = sqlalchemy.create_engine(uri, connect_args={"connect_timeout": timeout_s})
    try:
        with engine.connect():
            pass
    except Exception as exc:
        first = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
        raise UserError(f"--backend-store-uri: cannot connect to {redacted(uri)}: {first}") from None
    finally:
        engine.dispose()


def server_env() -> dict[str, str]:
    """The environment of `mlflow server` / `mlflow ui`. MLflow 3 starts a job runner beside the server (seven
    background processes of about 280 MB each, for GenAI judges and trace roll-ups, which sweeps do not use): off
    unless MLFLOW_SERVER_ENABLE_JOB_EXECUTION=true is set, so that the UI starts fast beside a sweep on a small
    machine."""
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"} | dict(os.environ)
    # Each web worker would print Starlette's deprecation warning about MLflow's own import, source line included.
    env["PYTHONWARNINGS"] = ",".join(filter(None, [env.get("PYTHONWARNINGS"), QUIET_WARNING]))
    return env


QUIET_WARNING = "ignore:starlette.middleware.wsgi is deprecated"


ADMIN_USER, ADMIN_PASSWORD = "MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD"


def admin_credentials(s: ServerSettings) -> tuple[str, str]:
    """The admin's user and password: from --auth-credentials FILE, else MLflow's environment variables."""
    if s.auth_credentials:
        path = Path(s.auth_credentials).expanduser()
        if not path.is_file():
            raise UserError(f"--auth-credentials: {path}: no such file")
        if path.stat().st_mode & 0o077:
            raise UserError(f"--auth-credentials: {path} can be read by other users; chmod 600 {path}")
        fields = {}
        for line in path.read_text(errors="replace").splitlines():
            key, sep, value = line.partition(":")
            if sep and key.strip() in ("username", "password"):
                fields[key.strip()] = value.strip()
        missing = [k for k in ("username", "password") if not fields.get(k)]
        if missing:
            raise UserError(f"--auth-credentials: {path} has no {' and no '.join(missing)} line "
                            f"(`username: admin` and `password: ...`)")
        user, password = fields["username"], fields["password"]
    else:
        user, password = os.environ.get(ADMIN_USER), os.environ.get(ADMIN_PASSWORD)
        if not user or not password:
            raise UserError(f"--auth: the admin's credentials: set {ADMIN_USER} and {ADMIN_PASSWORD}, or give "
                            f"--auth-credentials FILE (never on the command line)")
    if len(password) < 12:
        raise UserError("--auth: the admin's password is shorter than 12 characters")
    return user, password


AUTH_CACHE_TTL_S = 60


def auth_env(s: ServerSettings, private_dir: Path) -> dict[str, str]:
    """What `mlflow server --app-name basic-auth` reads: its config file (written here, readable by this user only,
    without the password, which travels in the environment) and the secret key its workers share."""
    user, password = admin_credentials(s)
    config = private_dir / "basic_auth.ini"
    # Each request's password check is a PBKDF2 hash (0.4 s of a core here): without the cache a sweep's driver,
    # which logs a trial's results between Tune's steps, spends seconds per result waiting for the server. A changed
    # password reaches the other web workers within the TTL (MLflow's note on auth_cache_ttl_seconds).
    config.write_text(f"[mlflow]\ndefault_permission = READ\ndatabase_uri = {s.auth_db_uri or s.backend_store_uri}\n"
                      f"authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
                      f"auth_cache_ttl_seconds = {AUTH_CACHE_TTL_S}\n")
    config.chmod(0o600)
    return {"MLFLOW_AUTH_CONFIG_PATH": str(config), ADMIN_USER: user, ADMIN_PASSWORD: password,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": os.environ.get("MLFLOW_FLASK_SERVER_SECRET_KEY") or secrets.token_hex(32)}


def server_command(s: ServerSettings, extra: list[str]) -> list[str]:
    # A line per request drowns everything else in the terminal; `-- --uvicorn-opts ...` replaces this choice.
    # The uvicorn supervisor pings its workers and kills one that does not answer in 5 s: on a machine busy with a
    # sweep a starting worker can take longer, so it gets 120 s.
    quiet = [] if any(o.startswith(("--uvicorn-opts", "--gunicorn-opts")) for o in extra) else [
        "--uvicorn-opts=--no-access-log --timeout-worker-healthcheck 120"]
    return [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", s.backend_store_uri,
            "--registry-store-uri", s.backend_store_uri,  # the default, said without MLflow's line about it
            "--serve-artifacts", "--artifacts-destination", s.artifacts_destination,
            "--host", s.host, "--port", str(s.port), "--workers", str(s.workers), *quiet,
            *(["--app-name", "basic-auth"] if s.auth else []), *extra]


def wait_healthy(url: str, process: subprocess.Popen, timeout_s: float = 180) -> None:  # /health needs no login
    """Until /health answers; the first start on an empty database also creates MLflow's tables."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise UserError(f"the MLflow server exited with code {process.returncode} (its output is above)")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise UserError(f"the MLflow server did not answer on {url}/health within {timeout_s:.0f} s (its output is "
                    f"above); on a busy machine give it longer")


def run_until_stopped(command: list[str], env: dict[str, str], health_url: str, start_timeout_s: float,
                      ready: str) -> int:
    """Run an MLflow web server (`mlflow server` or `mlflow ui`) in the foreground: say `ready` when it answers, and on
    Ctrl-C, SIGTERM or SIGHUP stop it and every process it started (its own process group), leaving no orphan on the
    port. Exit 0 when stopped that way, the server's code when it ends by itself."""
    process = subprocess.Popen(command, start_new_session=True, env=env)
    stopped = False

    def stop(*_):
        nonlocal stopped
        stopped = True
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        wait_healthy(health_url, process, start_timeout_s)
        log.info(ready)
        code = process.wait()
        return 0 if stopped else code
    except KeyboardInterrupt:
        return 0
    finally:
        stop()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def serve(s: ServerSettings, extra: list[str]) -> int:
    """Run the server in the foreground until Ctrl-C or SIGTERM, then stop it and every process it started."""
    check_backend(s.backend_store_uri)
    if s.auth_db_uri:
        check_backend(s.auth_db_uri)
    if s.auth:
        try:
            import flask_wtf  # noqa: F401
        except ImportError:
            raise UserError("--auth: MLflow's basic-auth app needs Flask-WTF: pip install 'peftsweep[cluster]' "
                            "(or 'mlflow[auth]')") from None
        admin_credentials(s)  # refused before anything starts
    private = Path(tempfile.mkdtemp(prefix="peftsweep-auth-"))  # mode 0700
    env = server_env() | (auth_env(s, private) if s.auth else {})
    if "://" not in s.artifacts_destination:
        Path(s.artifacts_destination).mkdir(parents=True, exist_ok=True)
    log.info(f"starting the MLflow tracking server on {s.url} with {s.workers} web worker(s) ... (a minute or more "
             f"while a sweep keeps this machine's CPUs busy)")
    login = (" Every request needs a user: sweeps set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD; "
             "the admin adds users (docs/cluster.md)." if s.auth else "")
    try:
        return run_until_stopped(server_command(s, extra), env, s.url, 180,
                                 f"MLflow tracking server ready: {s.url} (backend {redacted(s.backend_store_uri)}, "
                                 f"artifacts {s.artifacts_destination}). Sweeps log to it with tracking.uri: "
                                 f"http://<this host>:{s.port}.{login}")
    finally:
        for item in private.iterdir():
            item.unlink()
        private.rmdir()
