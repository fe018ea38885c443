"""Start the real service as subprocesses: `backprop db upgrade`, `backprop api` and
`backprop worker`, on the embedded defaults or on Redis + PostgreSQL at 127.0.0.1.

Shared by the end-to-end tests and the service benchmarks."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import httpx

BIN = Path(sys.executable).parent
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/13"  # each stack uses its own queue name in it


class ServiceUnavailable(RuntimeError):
    """Redis or PostgreSQL is not reachable."""


def unavailable(what: str, error: Exception) -> None:
    raise ServiceUnavailable(f"{what} is not reachable: {error}") from error


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh, uniquely named PostgreSQL database; dropped afterwards."""
    try:
        import psycopg

        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3)
    except Exception as error:  # noqa: BLE001 - any connection failure means "not reachable"
        unavailable("PostgreSQL at 127.0.0.1:5432", error)
    name = f"bp_it_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"postgresql://postgres@127.0.0.1:5432/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def fresh_redis() -> str:
    try:
        import redis

        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
        client.ping()
        client.close()
    except Exception as error:  # noqa: BLE001
        unavailable("Redis at 127.0.0.1:6379", error)
    return REDIS_URL


class RedisServer:
    """A private redis-server on a free port (no persistence), which tests may restart empty."""

    def __init__(self, workdir: Path):
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._workdir = workdir
        self._proc: subprocess.Popen | None = None

    def start(self, timeout: float = 10) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            raise ServiceUnavailable("redis-server is not installed")
        log = open(self._workdir / f"redis-{self.port}.log", "ab")
        self._proc = subprocess.Popen(
            [executable, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--daemonize", "no", "--dir", str(self._workdir)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if self._proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise ServiceUnavailable(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        """Kill it (SIGKILL): everything it held is gone."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(timeout=10)
        self._proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


@contextmanager
def private_redis(workdir: Path) -> Iterator[RedisServer]:
    workdir.mkdir(parents=True, exist_ok=True)
    server = RedisServer(workdir)
    server.start()
    try:
        yield server
    finally:
        server.stop()


S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "backprop-test", "AWS_SECRET_ACCESS_KEY": "backprop-test",
                  "AWS_DEFAULT_REGION": "us-east-1"}


class S3Server:
    """An S3-compatible server on loopback: moto's server mode, in memory, on a free port."""

    def __init__(self, workdir: Path):
        self.port = free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self._workdir = workdir
        self._proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30) -> None:
        log = open(self._workdir / f"s3-{self.port}.log", "ab")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env={**os.environ, **S3_CREDENTIALS},
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            try:
                if httpx.get(f"{self.endpoint_url}/moto-api/", timeout=1).status_code < 500:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise ServiceUnavailable(f"moto's S3 server did not start on port {self.port}")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(timeout=10)
        self._proc = None

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint_url, aws_access_key_id=S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                            region_name=S3_CREDENTIALS["AWS_DEFAULT_REGION"])

    def new_bucket(self) -> str:
        """A fresh bucket; returns its ARTIFACT_URL (s3://bucket/artifacts)."""
        name = f"bp-{uuid.uuid4().hex[:12]}"
        client = self.client()
        client.create_bucket(Bucket=name)
        client.close()
        return f"s3://{name}/artifacts"

    def env(self) -> dict[str, str]:
        """What a process needs to use this server as its artifact store."""
        return {"S3_ENDPOINT_URL": self.endpoint_url, **S3_CREDENTIALS}


@contextmanager
def s3_server(workdir: Path) -> Iterator[S3Server]:
    workdir.mkdir(parents=True, exist_ok=True)
    server = S3Server(workdir)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class Stack:
    url: str
    env: dict[str, str]
    workdir: Path
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    private_dirs: bool = False  # each process in a folder of its own (cwd, TMPDIR, WORK_DIR): no shared disk

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)

    def process_dir(self, name: str) -> Path:
        """Where process `name` runs: its own folder with private_dirs, else the shared workdir."""
        if not self.private_dirs:
            return self.workdir
        folder = self.workdir / f"private-{name}"
        (folder / "tmp").mkdir(parents=True, exist_ok=True)
        return folder

    def spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        folder = self.process_dir(name)
        env = dict(self.env)
        if self.private_dirs:
            env.update(TMPDIR=str(folder / "tmp"), WORK_DIR=str(folder / "tmp"))
        log = open(self.workdir / f"{name}.log", "ab")
        proc = subprocess.Popen(argv, env=env, cwd=folder, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.processes[name] = proc
        return proc

    def start_worker(self, name: str = "worker") -> subprocess.Popen:
        return self.spawn(name, [str(BIN / "backprop"), "worker"])

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
        proc = self.processes.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=timeout)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=10)

    def logs(self) -> str:
        parts = []
        for log in sorted(self.workdir.glob("*.log")):
            text = log.read_text(errors="replace")
            parts.append(f"----- {log.name} (last 4000 chars)\n{text[-4000:]}")
        return "\n".join(parts)


@contextmanager
def running_stack(workdir: Path, database_url: str, broker_url: str, workers: int = 1,
                  extra_env: dict[str, str] | None = None, *, private_dirs: bool = False,
                  api_args: tuple[str, ...] = ()) -> Iterator[Stack]:
    """`extra_env` overrides settings of every process (e.g. LEASE_SECONDS for crash tests).
    With `private_dirs`, each process runs in a folder of its own (pair it with S3 artifacts)."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "BROKER_URL": broker_url,
        "ARTIFACT_URL": str(workdir / "artifacts"),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "TRAINING_QUEUE": f"training-{uuid.uuid4().hex[:8]}",  # stacks sharing Redis never share a queue
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
        **(extra_env or {}),
    }
    subprocess.run([str(BIN / "backprop"), "db", "upgrade"], env=env, cwd=workdir, check=True,
                   capture_output=True, timeout=120)
    stack = Stack(url=f"http://127.0.0.1:{port}", env=env, workdir=workdir, private_dirs=private_dirs)
    stack.spawn("api", [str(BIN / "backprop"), "api", *api_args])
    for i in range(workers):
        stack.start_worker(f"worker{i}")
    try:
        wait_ready(stack)
        yield stack
    finally:
        for name in list(stack.processes):
            stack.stop(name)


def wait_ready(stack: Stack, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if stack.processes["api"].poll() is not None:
            raise RuntimeError(f"the API exited\n{stack.logs()}")
        try:
            response = httpx.get(f"{stack.url}/readyz", timeout=2)
            if response.status_code == 200:
                return
            last = response.text
        except httpx.HTTPError as error:
            last = repr(error)
        time.sleep(0.2)
    raise RuntimeError(f"the API was not ready in {timeout}s: {last}\n{stack.logs()}")


def wait_for_job(client: httpx.Client, job_id: str, statuses: tuple[str, ...], timeout: float = 180,
                 stack: Stack | None = None) -> dict:
    deadline = time.monotonic() + timeout
    job = {}
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in statuses:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not reach {statuses} in {timeout}s: {job}\n"
                         f"{stack.logs() if stack else ''}")
