"""A real PostgreSQL server for the tests, started from the system's binaries (Debian's `postgresql` package) in a
temporary folder, listening on 127.0.0.1 only, and stopped afterwards. Used by the `pg_url` fixture of conftest.py.
Without the binaries the tests that need it are skipped with a line saying how to install them; with
`MLOPS_NB_REQUIRE_POSTGRES=1` (CI) they fail instead."""
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path

HOW = ("PostgreSQL binaries not found: install Debian's `postgresql` package (apt-get install -y postgresql; "
       ".ci/run does it) to run the PostgreSQL tests")


def pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(found[-1]).parent if found else None


def _as_postgres(cmd: list[str]) -> list[str]:
    "initdb and the server refuse to run as root: run them as the `postgres` user then."
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


@contextmanager
def postgres_server(bin_: Path):
    "Start a throw-away PostgreSQL server; yield its URL (database `postgres`, user `postgres`, no password)."
    d = Path(tempfile.mkdtemp(prefix="mlops-pg-"))
    d.chmod(0o755)
    data = d / "data"
    data.mkdir()
    if os.geteuid() == 0: shutil.chown(data, "postgres", "postgres")
    port = free_port()
    subprocess.run(_as_postgres([str(bin_ / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"]),
                   check=True, capture_output=True, text=True)
    opts = f"-p {port} -c listen_addresses=127.0.0.1 -k {data} -c fsync=off"  # socket and log where postgres may write
    subprocess.run(_as_postgres([str(bin_ / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(data / "server.log"), "-w",
                                 "start"]), check=True, capture_output=True, text=True, timeout=60)
    try: yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(_as_postgres([str(bin_ / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]), capture_output=True)
        shutil.rmtree(d, ignore_errors=True)


def create_database(url: str, name: str) -> str:
    "Create database `name` on the server of `url` (one per store keeps MLflow's and Optuna's tables apart); its URL."
    import psycopg
    with psycopg.connect(url, autocommit=True) as con: con.execute(f'CREATE DATABASE "{name}"')
    return url.rsplit("/", 1)[0] + "/" + name
