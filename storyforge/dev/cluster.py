"""A private PostgreSQL cluster in a directory: found, initialised, started and
stopped with the system's server binaries (in the background with pg_ctl for the
tests and benchmarks, or as a supervised child process for `storyforge dev`); and
`free_port`, a free loopback port.

PostgreSQL refuses to run as root, so when we are root the cluster runs as the
unprivileged `postgres` account that Debian's package creates.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

DB_NAME = "storyforge"
DB_USER = "storyforge"


class ClusterError(RuntimeError):
    pass


def find_bindir() -> Path:
    """Directory holding initdb, pg_ctl and postgres (PATH first, then Debian's layout)."""
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(os.path.realpath(on_path)).parent
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if candidates:
        return candidates[-1].parent
    raise ClusterError(
        "PostgreSQL server binaries (initdb, pg_ctl) not found: "
        "install the Debian package 'postgresql' (apt-get install postgresql)"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Cluster:
    datadir: Path
    port: int
    bindir: Path

    @property
    def dsn(self) -> str:
        return f"postgresql://{DB_USER}@127.0.0.1:{self.port}/{DB_NAME}"

    def _run(self, args: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
        user = _run_as()
        proc = subprocess.run(
            args,
            user=user,
            group=user,
            extra_groups=[] if user else None,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            cwd="/",
            timeout=120,
        )
        if check and proc.returncode != 0:
            msg = (proc.stderr or proc.stdout).strip().splitlines()
            raise ClusterError(f"{Path(args[0]).name} failed: {' | '.join(msg[-3:])}")
        return proc

    def initialised(self) -> bool:
        return (self.datadir / "PG_VERSION").exists()

    def init(self) -> None:
        self.datadir.mkdir(parents=True, exist_ok=True)
        _hand_over(self.datadir)
        self._run(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(self.datadir),
                "-U",
                DB_USER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ]
        )

    def _options(self, fast: bool) -> list[str]:
        opts = [
            f"-p {self.port}",
            "-c listen_addresses=127.0.0.1",
            f"-k {self.datadir}",
            "-c max_connections=200",
        ]
        if fast:
            opts += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        return opts

    def _clear_stale_pidfile(self) -> None:
        stale = self.datadir / "postmaster.pid"
        if stale.exists() and not _pid_alive(stale):
            stale.unlink()

    def start(self, *, fast: bool = False) -> None:
        """Start on 127.0.0.1 only, in the background (pg_ctl); `fast` trades
        durability for speed (tests)."""
        self._clear_stale_pidfile()
        self._run(
            [
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.datadir),
                "-l",
                str(self.datadir / "server.log"),
                "-o",
                " ".join(self._options(fast)),
                "-w",
                "-t",
                "60",
                "start",
            ]
        )
        self._ensure_database()

    def server(self) -> subprocess.Popen[bytes]:
        """The server as a child process in the foreground (for a supervisor to watch
        and restart); its log goes to server.log. SIGINT stops it fast (the
        postmaster's "fast shutdown"). Call `wait_ready` before using it."""
        self._clear_stale_pidfile()
        user = _run_as()
        args: list[str] = [str(self.bindir / "postgres"), "-D", str(self.datadir)]
        for opt in self._options(fast=False):
            args += opt.split(" ", 1)
        log = (self.datadir / "server.log").open("ab")
        try:
            return subprocess.Popen(
                args,
                user=user,
                group=user,
                extra_groups=[] if user else None,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd="/",
                start_new_session=True,  # the terminal's Ctrl-C goes to the supervisor only
            )
        finally:
            log.close()

    def wait_ready(self, server: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
        """Wait until `server` accepts connections, then make sure our database exists."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise ClusterError(
                    f"postgres exited with status {server.returncode} while starting "
                    f"(see {self.datadir / 'server.log'})"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    pass
            except OSError:
                time.sleep(0.1)
                continue
            try:
                self._ensure_database()
                return
            except ClusterError:  # accepting connections but still starting up
                time.sleep(0.2)
        raise ClusterError(f"postgres did not accept connections within {timeout:g} s")

    def _ensure_database(self) -> None:
        psql = shutil.which("psql") or str(self.bindir / "psql")
        base = [psql, "-h", "127.0.0.1", "-p", str(self.port), "-U", DB_USER, "-d", "postgres"]
        out = self._run(
            base + ["-tAc", f"SELECT 1 FROM pg_database WHERE datname = '{DB_NAME}'"]
        ).stdout.strip()
        if out != "1":
            self._run(base + ["-c", f"CREATE DATABASE {DB_NAME}"])

    def stop(self) -> None:
        if (self.datadir / "postmaster.pid").exists():
            self._run(
                [str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "fast", "-w", "stop"],
                check=False,
            )


def _run_as() -> str | None:
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise ClusterError(
            "running as root and no 'postgres' account exists: PostgreSQL refuses to run "
            "as root; install the Debian package 'postgresql' (it creates the account)"
        ) from None
    return "postgres"


def _hand_over(path: Path) -> None:
    """Give the data directory to the account the server runs as, and make sure it
    can reach it (every parent directory must be searchable)."""
    user = _run_as()
    if user is None:
        return
    pw = pwd.getpwnam(user)
    for parent in reversed(path.resolve().parents):
        mode = parent.stat().st_mode
        if not mode & 0o001:
            os.chmod(parent, mode | 0o001)
    os.chown(path, pw.pw_uid, pw.pw_gid)
    os.chmod(path, 0o700)


def _pid_alive(pidfile: Path) -> bool:
    try:
        pid = int(pidfile.read_text().splitlines()[0])
        os.kill(pid, 0)
    except (ValueError, IndexError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def open_cluster(datadir: Path, port: int | None = None) -> Cluster:
    return Cluster(datadir=datadir.resolve(), port=port or free_port(), bindir=find_bindir())
