"""`backprop`: run the service's processes, and use the service from a terminal.

    backprop api          the HTTP API (uvicorn) on HOST:PORT
    backprop worker       a Celery worker on the `training` queue (exec's celery; any number, anywhere)
    backprop db upgrade   migrate the database to the latest schema
    backprop dev          db upgrade, then the API and one worker on this machine; Ctrl-C stops both
    backprop keys create --owner NAME | list [--owner NAME] | revoke KEY_ID
                          API keys; `create` prints the token once (only its hash is stored)
    backprop jobs ...     submit, list, show, history, watch, cancel, download (service/cli_client.py)
    backprop datasets ... upload, list, show

Settings come from the environment (see service.config); flags override the bind address and
the worker's concurrency only. The client commands talk to BACKPROP_URL with BACKPROP_API_KEY.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Annotated, Optional

import typer

from service.cli_client import datasets_app, jobs_app, sweeps_app
from service.config import Settings, get_settings, is_loopback  # noqa: F401 - is_loopback is re-exported

log = logging.getLogger("backprop")

WORKER_APP = "worker.app"  # imported by the celery process only, never here
DEV_STOP_GRACE_SECONDS = 10.0
# open event streams never end by themselves: at a stop, uvicorn cuts what is still open after this
API_SHUTDOWN_GRACE_SECONDS = 5

app = typer.Typer(name="backprop", help="Backprop Lab: training jobs over HTTP.", no_args_is_help=True,
                  add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)
db_app = typer.Typer(help="database schema", no_args_is_help=True)
keys_app = typer.Typer(help="API keys (bearer tokens) and their owners", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(keys_app, name="keys")
app.add_typer(jobs_app, name="jobs")
app.add_typer(datasets_app, name="datasets")
app.add_typer(sweeps_app, name="sweeps")


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)  # one line per plugin, every command
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request would bury the client's output
    try:
        app(args=list(argv) if argv is not None else None, prog_name="backprop")
    except SystemExit as done:
        if isinstance(done.code, str):  # sys.exit("message"), as Python itself prints it
            print(done.code, file=sys.stderr)
            return 1
        return done.code or 0
    return 0


# ---------------------------------------------------------------- commands


@app.command("api", help="serve the HTTP API")
def run_api(host: Annotated[Optional[str], typer.Option(help="bind address (default: HOST, 127.0.0.1)")] = None,
            port: Annotated[Optional[int], typer.Option(help="bind port (default: PORT, 8000)")] = None,
            workers: Annotated[Optional[int], typer.Option(
                help="API processes sharing the port (default: API_WORKERS, 1)")] = None) -> None:
    from service.serving import serve

    settings = get_settings()
    host, port = host or settings.host, port or settings.port
    # the app reads Settings in its lifespan (uvicorn builds it from the factory): hand it the
    # address really bound, so auth defaults and the refusal below see the same HOST
    os.environ["HOST"], os.environ["PORT"] = host, str(port)
    get_settings.cache_clear()
    settings = get_settings()
    refusal = settings.unsafe_bind()
    if refusal:
        log.error("%s", refusal)
        raise typer.Exit(2)
    if settings.auth_enabled:
        log.info("serving on %s:%d; /v1 requires an API key", host, port)
    else:
        log.warning("serving on %s:%d OPEN (no authentication): loopback only", host, port)
    workers = workers or settings.api_workers
    if workers < 1:
        log.error("--workers must be at least 1")
        raise typer.Exit(2)
    # each process builds its own app (engines, pools, the broker client) from the factory, fresh
    # (spawn), and listens on its own SO_REUSEPORT socket, so connections spread (service/serving.py)
    serve("service.main:create_app", host=host, port=port, workers=workers, log_level="info",
          timeout_graceful_shutdown=API_SHUTDOWN_GRACE_SECONDS)


def worker_argv(settings: Settings, *, concurrency: int | None = None, loglevel: str = "INFO",
                extra: Sequence[str] = ()) -> list[str]:
    """The celery command line of one `backprop worker`; its node name is unique per process."""
    extra = list(extra)
    if extra[:1] == ["--"]:
        extra = extra[1:]
    return [
        sys.executable, "-m", "celery", "-A", WORKER_APP, "worker",
        "-Q", settings.training_queue, "--prefetch-multiplier", "1",
        "--concurrency", str(concurrency or settings.worker_concurrency),
        "--loglevel", loglevel, "--hostname", f"backprop-{os.getpid()}@%h",
        *extra,
    ]


@app.command("worker", help="run a Celery worker on the training queue; arguments after -- go to celery worker",
             context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def run_worker(ctx: typer.Context,
               concurrency: Annotated[Optional[int], typer.Option(
                   help="training processes (default: WORKER_CONCURRENCY, 1)")] = None,
               loglevel: Annotated[str, typer.Option()] = "INFO") -> None:
    argv = worker_argv(get_settings(), concurrency=concurrency, loglevel=loglevel, extra=ctx.args)
    log.info("exec %s", " ".join(argv))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], argv)  # same pid: signals to `backprop worker` reach celery itself


@db_app.command("upgrade", help="migrate to the latest schema")
def run_db_upgrade() -> None:
    from service.store import upgrade

    settings = get_settings()
    upgrade(settings)
    log.info("database at %s is up to date", _redacted(settings.database_url))


@app.command("dev", help="migrate, then run the API and one worker locally (open, loopback only)")
def run_dev(grace: Annotated[float, typer.Option(help="seconds to wait for a clean stop before killing")]
            = DEV_STOP_GRACE_SECONDS) -> None:
    settings = get_settings()
    if not is_loopback(settings.host):
        log.error("backprop dev runs without authentication and binds to loopback only; HOST=%s refused "
                  "(use `backprop api` and `backprop worker` to serve others)", settings.host)
        raise typer.Exit(2)
    run_db_upgrade()
    log.warning("development mode: the API is OPEN (no authentication) on http://%s:%d (loopback only)",
                settings.host, settings.port)
    me = [sys.executable, "-m", "service.cli"]
    raise typer.Exit(supervise({"api": [*me, "api"], "worker": [*me, "worker"]}, grace=grace))


def _api_keys(settings: Settings):
    from sqlalchemy import inspect

    from service.store import ApiKeys, Store

    store = Store(settings)
    if not inspect(store.engine).has_table("api_keys"):
        store.dispose()
        raise SystemExit(f"error: the database at {_redacted(settings.database_url)} has no api_keys table; "
                         "run `backprop db upgrade` first")
    return store, ApiKeys(store)


@keys_app.command("create", help="create a key for an owner; prints the token once")
def run_keys_create(owner: Annotated[str, typer.Option(help="who the key acts as: 1-64 of letters, digits, _.@-")]) -> None:
    from service.store.keys import valid_owner

    if not valid_owner(owner):
        log.error("--owner %r: use 1-64 letters, digits and _.@- (starting with a letter or digit)", owner)
        raise typer.Exit(2)
    store, keys = _api_keys(get_settings())
    try:
        created = keys.create(owner)
    finally:
        store.dispose()
    log.info("created key %s for owner %s; the token below is shown only this once", created.key.id, owner)
    print(created.token, flush=True)  # stdout holds the token alone, for scripts


@keys_app.command("list", help="list keys (ids, owners, dates; never the tokens)")
def run_keys_list(owner: Annotated[Optional[str], typer.Option(help="only this owner's keys")] = None) -> None:
    store, keys = _api_keys(get_settings())
    try:
        listed = keys.list(owner=owner)
    finally:
        store.dispose()
    print(f"{'KEY_ID':<16}  {'OWNER':<24}  {'CREATED':<25}  REVOKED")
    for key in listed:
        revoked = key.revoked_at.isoformat(timespec="seconds") if key.revoked_at else "-"
        print(f"{key.id:<16}  {key.owner:<24}  {key.created_at.isoformat(timespec='seconds'):<25}  {revoked}")


@keys_app.command("revoke", help="revoke a key at once")
def run_keys_revoke(key_id: Annotated[str, typer.Argument(
        help="the id shown by `keys list` (the part after bpk_ in the token)")]) -> None:
    from service.store import NotFound

    store, keys = _api_keys(get_settings())
    try:
        revoked = keys.revoke(key_id)
    except NotFound:
        log.error("no key with id %r (see `backprop keys list`)", key_id)
        raise typer.Exit(1) from None
    finally:
        store.dispose()
    log.info("key %s of owner %s revoked at %s", revoked.id, revoked.owner, revoked.revoked_at.isoformat())


def _redacted(url: str) -> str:
    head, at, tail = url.rpartition("@")
    return f"{head.split('://')[0]}://***@{tail}" if at else url


# ---------------------------------------------------------------- supervising child processes


def supervise(commands: dict[str, list[str]], *, grace: float, poll_seconds: float = 0.2) -> int:
    """Run the commands as children until SIGINT/SIGTERM or until one exits; then stop them all.

    Each child gets its own session, so a terminal's Ctrl-C reaches them once, through us, as a
    SIGTERM (a clean stop for uvicorn and a warm shutdown for celery). Whatever is still running
    after `grace` seconds, or at a second signal, is killed with its process group. Returns 0
    after a requested stop, else the exit code of the child that ended first.
    """
    received: list[int] = []

    def on_signal(signum: int, _frame) -> None:
        received.append(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    children: dict[str, subprocess.Popen] = {}
    status = 0
    try:
        for name, argv in commands.items():
            children[name] = subprocess.Popen(argv, start_new_session=True)
            log.info("started %s (pid %d)", name, children[name].pid)
        while not received:
            ended = next(((name, child) for name, child in children.items() if child.poll() is not None), None)
            if ended is not None:
                name, child = ended
                log.error("%s exited with code %s; stopping the others", name, child.returncode)
                status = child.returncode or 1
                break
            time.sleep(poll_seconds)
        signals_before_stop = len(received)
        for name, child in children.items():
            if child.poll() is None:
                log.info("stopping %s (pid %d)", name, child.pid)
                child.send_signal(signal.SIGTERM)
        if signals_before_stop:
            log.info("waiting up to %.0f s for a clean stop; Ctrl-C again to kill at once", grace)
        deadline = time.monotonic() + grace
        while any(child.poll() is None for child in children.values()):
            if time.monotonic() > deadline or len(received) > signals_before_stop:
                break
            time.sleep(0.05)
    finally:
        for name, child in children.items():
            if child.poll() is None:
                log.warning("killing %s (pid %d)", name, child.pid)
                try:
                    os.killpg(child.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            child.wait()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return status


if __name__ == "__main__":
    sys.exit(main())
