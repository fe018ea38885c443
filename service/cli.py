"""`backprop`: run the service's processes.

    backprop api          the HTTP API (uvicorn) on HOST:PORT
    backprop worker       a Celery worker on the `training` queue (exec's celery; any number, anywhere)
    backprop db upgrade   migrate the database to the latest schema
    backprop dev          db upgrade, then the API and one worker on this machine; Ctrl-C stops both
    backprop keys create --owner NAME | list [--owner NAME] | revoke KEY_ID
                          API keys; `create` prints the token once (only its hash is stored)

Settings come from the environment (see service.config); flags override the bind address and
the worker's concurrency only.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

from service.config import Settings, get_settings, is_loopback  # noqa: F401 - is_loopback is re-exported

log = logging.getLogger("backprop")

WORKER_APP = "worker.app"  # imported by the celery process only, never here
DEV_STOP_GRACE_SECONDS = 10.0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)  # one line per plugin, every command
    return args.command(args) or 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="backprop", description="Backprop Lab: training jobs over HTTP.")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    api = commands.add_parser("api", help="serve the HTTP API")
    api.add_argument("--host", help="bind address (default: HOST, 127.0.0.1)")
    api.add_argument("--port", type=int, help="bind port (default: PORT, 8000)")
    api.add_argument("--workers", type=int, help="API processes sharing the port (default: API_WORKERS, 1)")
    api.set_defaults(command=run_api)

    worker = commands.add_parser("worker", help="run a Celery worker on the training queue")
    worker.add_argument("--concurrency", type=int, help="training processes (default: WORKER_CONCURRENCY, 1)")
    worker.add_argument("--loglevel", default="INFO")
    worker.add_argument("celery_args", nargs=argparse.REMAINDER, help="after --: passed to celery worker")
    worker.set_defaults(command=run_worker)

    db = commands.add_parser("db", help="database schema")
    db_commands = db.add_subparsers(required=True, metavar="ACTION")
    db_commands.add_parser("upgrade", help="migrate to the latest schema").set_defaults(command=run_db_upgrade)

    dev = commands.add_parser("dev", help="migrate, then run the API and one worker locally (open, loopback only)")
    dev.add_argument("--grace", type=float, default=DEV_STOP_GRACE_SECONDS,
                     help="seconds to wait for a clean stop before killing")
    dev.set_defaults(command=run_dev)

    keys = commands.add_parser("keys", help="API keys (bearer tokens) and their owners")
    key_commands = keys.add_subparsers(required=True, metavar="ACTION")
    create = key_commands.add_parser("create", help="create a key for an owner; prints the token once")
    create.add_argument("--owner", required=True, help="who the key acts as: 1-64 of letters, digits, _.@-")
    create.set_defaults(command=run_keys_create)
    listing = key_commands.add_parser("list", help="list keys (ids, owners, dates; never the tokens)")
    listing.add_argument("--owner", help="only this owner's keys")
    listing.set_defaults(command=run_keys_list)
    revoke = key_commands.add_parser("revoke", help="revoke a key at once")
    revoke.add_argument("key_id", help="the id shown by `keys list` (the part after bpk_ in the token)")
    revoke.set_defaults(command=run_keys_revoke)
    return parser


# ---------------------------------------------------------------- commands


def run_api(args: argparse.Namespace) -> int:
    import uvicorn

    settings = get_settings()
    host, port = args.host or settings.host, args.port or settings.port
    # the app reads Settings in its lifespan (uvicorn builds it from the factory): hand it the
    # address really bound, so auth defaults and the refusal below see the same HOST
    os.environ["HOST"], os.environ["PORT"] = host, str(port)
    get_settings.cache_clear()
    settings = get_settings()
    refusal = settings.unsafe_bind()
    if refusal:
        log.error("%s", refusal)
        return 2
    if settings.auth_enabled:
        log.info("serving on %s:%d; /v1 requires an API key", host, port)
    else:
        log.warning("serving on %s:%d OPEN (no authentication): loopback only", host, port)
    workers = args.workers or settings.api_workers
    if workers < 1:
        log.error("--workers must be at least 1")
        return 2
    # each process builds its own app (engines, pools, the broker client) from the factory:
    # uvicorn starts its workers fresh (spawn), so nothing is shared across processes
    uvicorn.run("service.main:create_app", factory=True, host=host, port=port, log_level="info",
                workers=workers if workers > 1 else None)
    return 0


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


def run_worker(args: argparse.Namespace) -> int:
    argv = worker_argv(get_settings(), concurrency=args.concurrency, loglevel=args.loglevel, extra=args.celery_args)
    log.info("exec %s", " ".join(argv))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], argv)  # same pid: signals to `backprop worker` reach celery itself
    return 1  # not reached


def run_db_upgrade(args: argparse.Namespace) -> int:
    from service.store import upgrade

    settings = get_settings()
    upgrade(settings)
    log.info("database at %s is up to date", _redacted(settings.database_url))
    return 0


def run_dev(args: argparse.Namespace) -> int:
    settings = get_settings()
    if not is_loopback(settings.host):
        log.error("backprop dev runs without authentication and binds to loopback only; HOST=%s refused "
                  "(use `backprop api` and `backprop worker` to serve others)", settings.host)
        return 2
    run_db_upgrade(args)
    log.warning("development mode: the API is OPEN (no authentication) on http://%s:%d (loopback only)",
                settings.host, settings.port)
    me = [sys.executable, "-m", "service.cli"]
    return supervise({"api": [*me, "api"], "worker": [*me, "worker"]}, grace=args.grace)


def _api_keys(settings: Settings):
    from sqlalchemy import inspect

    from service.store import ApiKeys, Store

    store = Store(settings)
    if not inspect(store.engine).has_table("api_keys"):
        store.dispose()
        raise SystemExit(f"error: the database at {_redacted(settings.database_url)} has no api_keys table; "
                         "run `backprop db upgrade` first")
    return store, ApiKeys(store)


def run_keys_create(args: argparse.Namespace) -> int:
    from service.store.keys import valid_owner

    if not valid_owner(args.owner):
        log.error("--owner %r: use 1-64 letters, digits and _.@- (starting with a letter or digit)", args.owner)
        return 2
    store, keys = _api_keys(get_settings())
    try:
        created = keys.create(args.owner)
    finally:
        store.dispose()
    log.info("created key %s for owner %s; the token below is shown only this once", created.key.id, args.owner)
    print(created.token, flush=True)  # stdout holds the token alone, for scripts
    return 0


def run_keys_list(args: argparse.Namespace) -> int:
    store, keys = _api_keys(get_settings())
    try:
        listed = keys.list(owner=args.owner)
    finally:
        store.dispose()
    print(f"{'KEY_ID':<16}  {'OWNER':<24}  {'CREATED':<25}  REVOKED")
    for key in listed:
        revoked = key.revoked_at.isoformat(timespec="seconds") if key.revoked_at else "-"
        print(f"{key.id:<16}  {key.owner:<24}  {key.created_at.isoformat(timespec='seconds'):<25}  {revoked}")
    return 0


def run_keys_revoke(args: argparse.Namespace) -> int:
    from service.store import NotFound

    store, keys = _api_keys(get_settings())
    try:
        revoked = keys.revoke(args.key_id)
    except NotFound:
        log.error("no key with id %r (see `backprop keys list`)", args.key_id)
        return 1
    finally:
        store.dispose()
    log.info("key %s of owner %s revoked at %s", revoked.id, revoked.owner, revoked.revoked_at.isoformat())
    return 0


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
