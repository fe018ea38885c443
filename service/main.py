"""Build the API application.

`create_app()` takes its collaborators or builds them in the lifespan, never at import time:
`uvicorn --factory service.main:create_app` (what `backprop api` runs) reads Settings from the
environment when the server starts; tests pass a Settings, a Store and an Enqueuer of their own.
"""
from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator

import anyio.to_thread
from fastapi import FastAPI

from service.api.auth import BearerAuth
from service.api.dashboard import install_dashboard
from service.api.errors import install_error_handlers
from service.api.head import HeadAsGet
from service.api.limits import BodySizeLimit
from service.api.main import api_router
from service.api.streams import JobStreams
from service.blas import limit_blas_threads
from service.config import Settings, get_settings
from service.events import JobEvents, redis_url
from service.portable.cache import ModelCache
from service.queue import Enqueuer, celery_client
from service.store import ApiKeys, Store

log = logging.getLogger("backprop.api")

DESCRIPTION = """Submit neural-network training jobs, follow their progress and per-epoch metrics,
and download the trained model. Jobs run on Celery workers; results live in SQL."""


def create_app(settings: Settings | None = None, *, store: Store | None = None,
               enqueuer: Enqueuer | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app_settings = settings or get_settings()
        refusal = app_settings.unsafe_bind()
        if refusal:  # `backprop api` refuses first; this covers other ways of serving the app
            raise RuntimeError(refusal)
        if app_settings.auth_enabled:
            log.info("authentication on: /v1 needs an API key (Authorization: Bearer)")
        else:
            log.warning("authentication OFF: the API is open to anyone who can reach %s (loopback only)",
                        app_settings.host)
        _make_embedded_broker_folder(app_settings.broker_url)
        app.state.settings = app_settings
        app.state.auth_enabled = app_settings.auth_enabled  # read on every request: decided once
        app.state.store = store or Store(app_settings)
        app.state.keys = ApiKeys(app.state.store)
        app.state.model_cache = ModelCache(app_settings.model_cache_size)  # predict and ONNX, per process
        limit_blas_threads(app_settings.blas_threads)  # predict runs the engine in this process
        app.openapi()  # built once now: strict_query and the 405 handler read it on every request
        app.state.enqueuer = enqueuer or Enqueuer(celery_client(app_settings))
        app.state.job_events = JobEvents(redis_url(app_settings.broker_url))
        app.state.streams = JobStreams(app.state.store, app_settings)
        await app.state.streams.start()
        # sync handlers and dependencies run on this many threads: 20 pollers on 40 threads (the
        # default) fight over the GIL; on 4 they queue, with 1.4 x the throughput and a third of the p99
        anyio.to_thread.current_default_thread_limiter().total_tokens = app_settings.api_threads
        try:
            yield
        finally:  # close only what this lifespan built
            await app.state.streams.stop()
            app.state.job_events.close()
            if enqueuer is None:
                app.state.enqueuer.close()
            if store is None:
                app.state.store.dispose()

    app = FastAPI(title="Backprop Lab", version="1.0.0", description=DESCRIPTION, lifespan=lifespan)
    app.add_middleware(BodySizeLimit)
    app.add_middleware(HeadAsGet)
    app.add_middleware(BearerAuth)  # added last, so it runs first: no key, no body read
    install_error_handlers(app)
    app.include_router(api_router)
    install_dashboard(app)
    return app


def _make_embedded_broker_folder(broker_url: str) -> None:
    # the embedded broker's SQLite file lives in ./data by default, which may not exist yet
    if broker_url.startswith("sqla+sqlite:///"):
        Path(broker_url.removeprefix("sqla+sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
