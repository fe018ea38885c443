"""Typed dependencies: handlers read `store: StoreDep`, `settings: SettingsDep`, ...

Everything comes from `app.state`, which the app's lifespan fills (see service.main), so nothing
is built at import time and tests pass their own store and enqueuer.
"""
from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.config import Settings
from service.queue import Enqueuer
from service.store import Store


def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_store(request: Request) -> Store:
    return request.app.state.store


def get_enqueuer(request: Request) -> Enqueuer:
    return request.app.state.enqueuer


def get_owner() -> str | None:
    """The caller's owner id. API keys arrive with issue 4; until then everything is one open owner."""
    return None


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
StoreDep = Annotated[Store, Depends(get_store)]
EnqueuerDep = Annotated[Enqueuer, Depends(get_enqueuer)]
OwnerDep = Annotated[str | None, Depends(get_owner)]
