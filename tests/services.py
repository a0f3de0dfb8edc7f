"""Real services for the tests that start them: a private PostgreSQL server, Ray nodes started with `ray start`, and
requests to an MLflow server (its health, its REST API with a basic-auth login).

Every process is started in its own process group and stopped (SIGTERM, then SIGKILL) with that group.
"""

from __future__ import annotations

import base64
import contextlib
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

VENV_BIN = str(Path(sys.executable).parent)


def http_json(url: str, login: tuple[str, str] | None = None, body: dict | None = None,
              timeout: float = 30) -> tuple[int, dict]:
    """GET (POST with a body) a JSON API, with a basic-auth login if given: the status and the answer ({} if none)."""
    request = urllib.request.Request(url, data=json.dumps(body).encode() if body else None,
                                     method="POST" if body else "GET", headers={"Content-Type": "application/json"})
    if login is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(login).encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            text = response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        return exc.code, {}
    try:
        return status, json.loads(text or b"{}")
    except ValueError:  # /health answers "OK"
        return status, {}


def mlflow_healthy(url: str) -> bool:
    """The MLflow server answers its /health (with or without --auth: /health needs no login)."""
    try:
        return http_json(f"{url}/health", timeout=2)[0] == 200
    except OSError:
        return False


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port for a server a test starts. Not one the kernel would pick for a socket of its own (port 0 gives one of
    those, 32768-60999 here: a client connection opened meanwhile, Ray's or MLflow's, could take it before the server
    binds it), not one of Ray's worker ports (10002-19999), not one the other pytest-xdist worker can pick (each has
    its own block of 20000-31999), and never the same twice in a run."""
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").lstrip("gw") or 0)
    block_size = 2000
    start = 20000 + (worker % 6) * block_size
    for port in range(start + (os.getpid() % 97) * 7 % block_size, start + block_size):
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise AssertionError(f"no free port in {start}-{start + block_size - 1}")


def run(command: list[str], env: dict[str, str] | None = None, timeout: float = 180) -> None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{' '.join(command)} did not finish within {timeout:.0f} s") from None
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(command)} exited {done.returncode}: {done.stdout}{done.stderr}")


def postgres_bin() -> Path | None:
    """Debian's PostgreSQL binaries (package `postgresql`), or any initdb on PATH."""
    found = shutil.which("initdb") or next(iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))[-1:]), None)
    return Path(found).resolve().parent if found else None


def as_postgres_user(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root (CI runs as root): run it as Debian's `postgres` user then."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


def wait_for(condition, timeout: float, what: str, process: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if process is not None and process.poll() is not None:
            raise AssertionError(f"{what}: the process exited with code {process.returncode}")
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def stop_group(process: subprocess.Popen, timeout: float = 20) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=timeout)
            return
        except subprocess.TimeoutExpired:
            continue


@contextlib.contextmanager
def background(command: list[str], log: Path, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen]:
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        yield process
    finally:
        stop_group(process)


@contextlib.contextmanager
def postgres(directory: Path, user: str = "peftsweep", password: str = "sweep-secret") -> Iterator[str]:
    """A PostgreSQL server of its own on a free port with password (scram) authentication; yields the URI of an
    empty database `mlflow`."""
    bin_dir = postgres_bin()
    directory.mkdir(parents=True, exist_ok=True)
    directory.parent.chmod(0o755)  # the postgres user must reach it
    data, sockets = directory / "data", directory / "sockets"
    sockets.mkdir()
    password_file = directory / "password"
    password_file.write_text(password)
    if os.geteuid() == 0:
        shutil.chown(directory, "postgres")
        shutil.chown(sockets, "postgres")
        shutil.chown(password_file, "postgres")
    run(as_postgres_user([str(bin_dir / "initdb"), "-D", str(data), "-U", user, "--auth=scram-sha-256",
                          f"--pwfile={password_file}", "--encoding=UTF8", "--no-sync"]))
    for attempt in range(3):  # a port taken meanwhile by another process: pg_ctl fails, another port is tried
        port = free_port()
        options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off"
        try:
            run(as_postgres_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l",
                                  str(directory / "postgres.log"), "-w", "-t", "120", "start"]))
            break
        except AssertionError:
            if attempt == 2 or "in use" not in (directory / "postgres.log").read_text():
                raise
    try:
        env = os.environ | {"PGPASSWORD": password}
        run([str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", user, "mlflow"], env=env)
        yield f"postgresql://{user}:{password}@127.0.0.1:{port}/mlflow"
    finally:
        subprocess.run(as_postgres_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
                       capture_output=True, timeout=120)


def ray_env() -> dict[str, str]:
    # The job's entrypoint runs in a shell started by the head node: this environment's `python` comes first.
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return env | {"PATH": f"{VENV_BIN}:{env.get('PATH', '')}", "RAY_AUTH_MODE": "disabled"}


def ray_node(temp_dir: Path, log: Path, *, head_port: int, cpus: int, resources: dict[str, float],
             dashboard_port: int | None = None):
    """`ray start --block` for a head (dashboard_port given) or a worker node. Each node gets its own temp dir:
    two nodes on one machine sharing one would delete each other's runtime-env files."""
    command = [f"{VENV_BIN}/ray", "start", "--block", f"--num-cpus={cpus}", f"--resources={json.dumps(resources)}",
               f"--temp-dir={temp_dir}", "--object-store-memory=150000000", "--disable-usage-stats",
               f"--dashboard-agent-listen-port={free_port()}", f"--metrics-export-port={free_port()}"]
    if dashboard_port is not None:
        command += ["--head", f"--port={head_port}", "--node-ip-address=127.0.0.1", "--include-dashboard=true",
                    "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}"]
    else:
        command += [f"--address=127.0.0.1:{head_port}", "--node-ip-address=127.0.0.1"]
    return background(command, log, env=ray_env())


def alive_nodes(address: str) -> dict[str, dict[str, float]]:
    """{node id: resources} of the cluster's alive nodes, asked from a separate driver process."""
    script = ("import json, ray; ray.init(address=%r, log_to_driver=False); "
              "print(json.dumps({n['NodeID']: n['Resources'] for n in ray.nodes() if n['Alive']}))") % address
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=ray_env(), timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 and out.stdout.strip() else {}


def descendants(pid: int) -> list[str]:
    """Command lines of the live processes started by `pid`, its children's children included."""
    parents, commands = {}, {}
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            child = int(stat.split("/")[2])
            parents[child] = int(Path(stat).read_text().rsplit(")", 1)[1].split()[1])
            commands[child] = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue
    found, frontier = [], {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier}
        found += [commands[child][:200] for child in frontier]
    return found


def processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that contain `text` (to prove a test left nothing running)."""
    found = []
    for cmdline in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            command = Path(cmdline).read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in command and str(os.getpid()) != cmdline.split("/")[2]:
            found.append(command[:200])
    return found
