"""`backprop` commands, run as real processes (python -m service.cli == the console script)."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, inspect

from service.cli import is_loopback, worker_argv
from service.config import Settings

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    """Environment of a service process rooted in tmp_path (embedded database and broker)."""
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DATABASE_URL": f"sqlite:///{tmp_path}/db/backprop.db",
        "BROKER_URL": f"sqla+sqlite:///{tmp_path}/broker/broker.db",
        "ARTIFACT_URL": str(tmp_path / "artifacts"),
        "HOST": "127.0.0.1",
        "PORT": str(free_port()),
        "PYTHONUNBUFFERED": "1",
        "OPENBLAS_NUM_THREADS": "1",
    }


def backprop(*args: str) -> list[str]:
    return [sys.executable, "-m", "service.cli", *args]


def start_api(env: dict, tmp_path: Path) -> tuple[subprocess.Popen, str, Path]:
    """`backprop api` in its own session, logging to tmp_path/api.log; returns (process, url, log)."""
    log = tmp_path / "api.log"
    with open(log, "wb") as out:
        api = subprocess.Popen(backprop("api"), env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT,
                               start_new_session=True)
    return api, f"http://127.0.0.1:{env['PORT']}", log


def wait_until_ready(url: str, process: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"exited early:\n{log.read_text()}"
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"not ready in {timeout}s:\n{log.read_text()}")


def stop(process: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
    if process.poll() is None:
        process.send_signal(sig)
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise


# ---------------------------------------------------------------- pure parts


def test_worker_command_line():
    settings = Settings(_env_file=None, worker_concurrency=3)
    argv = worker_argv(settings, extra=["--", "--without-gossip"])
    assert argv[:3] == [sys.executable, "-m", "celery"]
    assert argv[3:] == ["-A", "worker.app", "worker", "-Q", "training", "--prefetch-multiplier", "1",
                        "--concurrency", "3", "--loglevel", "INFO", "--hostname", f"backprop-{os.getpid()}@%h",
                        "--without-gossip"]
    assert worker_argv(settings, concurrency=5)[argv.index("--concurrency") + 1] == "5"


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("localhost", True), ("::1", True),
                                            ("127.0.0.5", True), ("0.0.0.0", False), ("10.0.0.1", False),
                                            ("example.com", False)])
def test_is_loopback(host, loopback):
    assert is_loopback(host) is loopback


def test_the_cli_does_not_import_worker_code():
    # the pure engine (worker.nn: numpy only) is allowed: specs derive their choices from its registries
    code = ("import service.cli, service.main, sys; print(sorted(m for m in sys.modules if m.split('.')[0] == 'worker'"
            " and m != 'worker' and not m.startswith('worker.nn')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------- real processes


def test_db_upgrade_creates_the_schema_and_is_idempotent(env, tmp_path):
    for _ in range(2):
        done = subprocess.run(backprop("db", "upgrade"), env=env, cwd=tmp_path, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr
    engine = create_engine(env["DATABASE_URL"])
    try:
        tables = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert {"datasets", "jobs", "alembic_version"} <= tables


def test_worker_execs_celery(env, tmp_path):
    done = subprocess.run(backprop("worker", "--concurrency", "2", "--", "--help"), env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "--prefetch-multiplier" in done.stdout and "--concurrency" in done.stdout  # celery worker's help
    assert "exec " in done.stderr and "-A worker.app worker -Q training" in done.stderr


def test_api_serves_until_sigterm(env, tmp_path):
    subprocess.run(backprop("db", "upgrade"), env=env, cwd=tmp_path, check=True, capture_output=True, timeout=120)
    api, url, log = start_api(env, tmp_path)
    try:
        wait_until_ready(url, api, log)
        response = httpx.post(f"{url}/v1/jobs", json={"dataset": {"builtin": "xor"}, "epochs": 1})
        assert response.status_code == 202, response.text
    finally:
        code = stop(api)
    assert code in (0, -signal.SIGTERM), log.read_text()  # uvicorn re-raises the signal after a clean stop
    assert "Application shutdown complete" in log.read_text()


def test_dev_refuses_a_non_loopback_host(env, tmp_path):
    done = subprocess.run(backprop("dev"), env={**env, "HOST": "0.0.0.0"}, cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2
    assert "loopback only" in done.stderr
    assert not (tmp_path / "db").exists(), "refused before touching the database"


def test_api_refuses_a_non_loopback_host_without_auth(env, tmp_path):
    for extra_env, args in (({"HOST": "0.0.0.0", "AUTH_REQUIRED": "false"}, ()),
                            ({"AUTH_REQUIRED": "false"}, ("--host", "0.0.0.0"))):
        done = subprocess.run(backprop("api", *args), env={**env, **extra_env}, cwd=tmp_path, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 2, done.stderr
        assert "refusing to serve on HOST=0.0.0.0 without authentication" in done.stderr
        assert "Uvicorn running" not in done.stderr


def keys_cli(env, tmp_path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(backprop("keys", *args), env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    if check:
        assert done.returncode == 0, done.stderr
    return done


def test_keys_create_list_revoke(env, tmp_path):
    from service.store import ApiKeys, Store

    subprocess.run(backprop("db", "upgrade"), env=env, cwd=tmp_path, check=True, capture_output=True, timeout=120)
    token = keys_cli(env, tmp_path, "create", "--owner", "alice").stdout.strip()
    assert re.fullmatch(r"bpk_[0-9a-f]{16}_[A-Za-z0-9_-]{43}", token), token
    key_id = token.split("_")[1]
    other = keys_cli(env, tmp_path, "create", "--owner", "bob").stdout.strip()

    listed = keys_cli(env, tmp_path, "list").stdout
    assert token not in listed and token.split("_", 2)[2] not in listed  # never shown again
    rows = [line.split() for line in listed.splitlines()[1:]]
    assert [(row[0], row[1], row[3]) for row in rows] == [(key_id, "alice", "-"), (other.split("_")[1], "bob", "-")]
    assert [line.split()[1] for line in keys_cli(env, tmp_path, "list", "--owner", "bob").stdout.splitlines()[1:]] == ["bob"]

    store = Store(Settings(_env_file=None, database_url=env["DATABASE_URL"]))
    try:
        keys = ApiKeys(store)
        assert keys.authenticate(token) == "alice"
        revoked = keys_cli(env, tmp_path, "revoke", key_id)
        assert f"key {key_id} of owner alice revoked" in revoked.stderr
        assert keys.authenticate(token) is None and keys.authenticate(other) == "bob"
    finally:
        store.dispose()
    assert keys_cli(env, tmp_path, "list").stdout.splitlines()[1].split()[3] != "-"

    unknown = keys_cli(env, tmp_path, "revoke", "0" * 16, check=False)
    assert unknown.returncode == 1 and "no key with id" in unknown.stderr
    bad_owner = keys_cli(env, tmp_path, "create", "--owner", "../alice", check=False)
    assert bad_owner.returncode == 2 and bad_owner.stdout == ""


def test_keys_on_an_unmigrated_database_say_what_to_run(env, tmp_path):
    done = keys_cli(env, tmp_path, "create", "--owner", "alice", check=False)
    assert done.returncode != 0 and done.stdout == ""
    assert "run `backprop db upgrade` first" in done.stderr


def test_api_with_auth_takes_keys_from_the_cli(env, tmp_path):
    env = {**env, "AUTH_REQUIRED": "true"}
    subprocess.run(backprop("db", "upgrade"), env=env, cwd=tmp_path, check=True, capture_output=True, timeout=120)
    token = keys_cli(env, tmp_path, "create", "--owner", "alice").stdout.strip()
    api, url, log = start_api(env, tmp_path)
    try:
        wait_until_ready(url, api, log)
        body = {"dataset": {"builtin": "xor"}, "epochs": 1}
        refused = httpx.post(f"{url}/v1/jobs", json=body)
        assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Bearer")
        accepted = httpx.post(f"{url}/v1/jobs", json=body, headers={"Authorization": f"Bearer {token}"})
        assert accepted.status_code == 202, accepted.text
    finally:
        stop(api)
    assert "/v1 requires an API key" in log.read_text()


@pytest.mark.integration
def test_dev_runs_api_and_worker_and_ctrl_c_stops_both(env, tmp_path):
    log = tmp_path / "dev.log"
    with open(log, "wb") as out:
        dev = subprocess.Popen(backprop("dev", "--grace", "20"), env=env, cwd=tmp_path, stdout=out,
                               stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{env['PORT']}"
    try:
        wait_until_ready(url, dev, log)
        job = httpx.post(f"{url}/v1/jobs", json={"dataset": {"builtin": "xor"}, "epochs": 20}).json()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            job = httpx.get(f"{url}/v1/jobs/{job['id']}").json()
            if job["status"] in ("succeeded", "failed", "cancelled"):
                break
            time.sleep(0.2)
        assert job["status"] == "succeeded", f"{job}\n{log.read_text()}"
    finally:
        code = stop(dev, signal.SIGINT)  # what Ctrl-C sends
    text = log.read_text()
    assert code == 0, text
    assert re.search(r"API is OPEN \(no authentication\) on http://127\.0\.0\.1:\d+", text)
    children = [int(pid) for pid in re.findall(r"started \w+ \(pid (\d+)\)", text)]
    assert len(children) == 2
    for pid in children:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


# ---------------------------------------------------------------- supervise


CHILD = textwrap.dedent("""
    import pathlib, signal, sys, time
    folder, name, on_term = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    def handle(signum, frame):
        (folder / f"{name}.{signal.Signals(signum).name}").touch()
        if on_term == "exit":
            sys.exit(0)
    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    (folder / f"{name}.ready").touch()
    if on_term == "die":
        sys.exit(7)
    while True:
        time.sleep(0.05)
""")


def start_supervisor(tmp_path: Path, behaviours: dict[str, str], grace: float) -> subprocess.Popen:
    (tmp_path / "child.py").write_text(CHILD)
    commands = {name: [sys.executable, str(tmp_path / "child.py"), str(tmp_path), name, behaviour]
                for name, behaviour in behaviours.items()}
    driver = f"import sys; from service.cli import supervise; sys.exit(supervise({json.dumps(commands)}, grace={grace}))"
    return subprocess.Popen([sys.executable, "-c", driver], cwd=ROOT, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for_files(*paths: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not all(path.exists() for path in paths):
        assert time.monotonic() < deadline, f"missing {[str(p) for p in paths if not p.exists()]}"
        time.sleep(0.05)


def test_supervise_forwards_a_signal_as_sigterm_to_every_child(tmp_path):
    driver = start_supervisor(tmp_path, {"a": "exit", "b": "exit"}, grace=20)
    wait_for_files(tmp_path / "a.ready", tmp_path / "b.ready")
    driver.send_signal(signal.SIGINT)
    assert driver.wait(timeout=30) == 0, driver.stdout.read()
    assert (tmp_path / "a.SIGTERM").exists() and (tmp_path / "b.SIGTERM").exists()
    assert not (tmp_path / "a.SIGINT").exists(), "children get the signal once, from the supervisor"


def test_supervise_kills_what_ignores_sigterm_after_the_grace(tmp_path):
    driver = start_supervisor(tmp_path, {"stubborn": "ignore", "polite": "exit"}, grace=1)
    wait_for_files(tmp_path / "stubborn.ready", tmp_path / "polite.ready")
    driver.send_signal(signal.SIGTERM)
    assert driver.wait(timeout=30) == 0
    output = driver.stdout.read()
    assert (tmp_path / "stubborn.SIGTERM").exists()
    assert "killing stubborn" in output and "killing polite" not in output


def test_supervise_stops_the_others_when_one_child_dies(tmp_path):
    driver = start_supervisor(tmp_path, {"dies": "die", "lives": "exit"}, grace=20)
    assert driver.wait(timeout=30) == 7
    assert (tmp_path / "lives.SIGTERM").exists()
    assert "dies exited with code 7" in driver.stdout.read()
