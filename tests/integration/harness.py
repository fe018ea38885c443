"""Test-side policy around bench.stack: a missing Redis/PostgreSQL fails under CI=true, skips elsewhere."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from bench.stack import ServiceUnavailable, wait_for_job  # noqa: F401 - re-exported
from bench import stack as _stack
from tests.utils.db import unavailable
from tests.utils.no_5xx import scan_api_logs


@contextmanager
def running_stack(workdir, *args, **kwargs) -> Iterator[_stack.Stack]:
    """bench.stack.running_stack; when it stops, its API log's 5xx answers are reported (tests/utils/no_5xx.py)."""
    try:
        with _stack.running_stack(workdir, *args, **kwargs) as stack:
            yield stack
    finally:
        scan_api_logs(workdir)


@contextmanager
def postgres_database() -> Iterator[str]:
    try:
        with _stack.postgres_database() as url:
            yield url
    except ServiceUnavailable as error:
        unavailable(str(error))


def fresh_redis() -> str:
    try:
        return _stack.fresh_redis()
    except ServiceUnavailable as error:
        unavailable(str(error))


@contextmanager
def private_redis(workdir) -> Iterator[_stack.RedisServer]:
    """A redis-server of this test's own on a free port (tests may restart it empty)."""
    workdir.mkdir(parents=True, exist_ok=True)
    server = _stack.RedisServer(workdir)
    try:
        server.start()
    except ServiceUnavailable as error:
        unavailable(str(error))
    try:
        yield server
    finally:
        server.stop()
