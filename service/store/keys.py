"""API keys: created and revoked by `backprop keys`, checked by the API on every /v1 request.

A token is `bpk_<key id>_<secret>`: the id (16 hex digits) is public and finds the row; the secret
(32 random bytes, URL-safe base64) is never stored, only its sha256, compared in constant time.
A plain hash is enough because the secret is random and long: there is nothing to guess.
"""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from service.store.errors import NotFound
from service.store.models import ApiKeyRow
from service.store.base import utcnow
from service.store.store import Store

TOKEN_PREFIX = "bpk"
OWNER_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
_TOKEN = re.compile(rf"{TOKEN_PREFIX}_([0-9a-f]{{16}})_([A-Za-z0-9_-]{{43}})")
_NO_SUCH_SECRET = hashlib.sha256(b"no such key").hexdigest()


@dataclass(frozen=True)
class ApiKeyPublic:
    id: str
    owner: str
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True)
class NewApiKey:
    key: ApiKeyPublic
    token: str  # shown once; only its hash is stored


def valid_owner(owner: str) -> bool:
    return OWNER_PATTERN.fullmatch(owner) is not None


def _sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class ApiKeys:
    """Keys in the store's database (table api_keys, migration 0002)."""

    def __init__(self, store: Store, *, clock: Callable[[], datetime] = utcnow,
                 new_secret: Callable[[], str] = lambda: secrets.token_urlsafe(32),
                 new_key_id: Callable[[], str] = lambda: secrets.token_hex(8)):
        self._store = store
        self._clock = clock
        self._new_secret = new_secret
        self._new_key_id = new_key_id

    def create(self, owner: str) -> NewApiKey:
        if not valid_owner(owner):
            raise ValueError(f"owner {owner!r}: 1-64 characters of letters, digits and _.@- "
                             "(starting with a letter or digit)")
        key_id, secret = self._new_key_id(), self._new_secret()
        row = ApiKeyRow(id=key_id, owner=owner, secret_sha256=_sha256(secret), created_at=self._clock())
        with self._store.session_scope(write=True) as session:
            session.add(row)
            session.flush()
            public = _public(row)
        return NewApiKey(key=public, token=f"{TOKEN_PREFIX}_{key_id}_{secret}")

    def list(self, owner: str | None = None) -> list[ApiKeyPublic]:
        query = select(ApiKeyRow).order_by(ApiKeyRow.created_at, ApiKeyRow.id)
        if owner is not None:
            query = query.where(ApiKeyRow.owner == owner)
        with self._store.session_scope() as session:
            return [_public(row) for row in session.scalars(query)]

    def revoke(self, key_id: str) -> ApiKeyPublic:
        """Revoke at once (the next request with it gets 401); revoking twice keeps the first time."""
        with self._store.session_scope(write=True) as session:
            row = session.get(ApiKeyRow, key_id)
            if row is None:
                raise NotFound("api key", key_id)
            if row.revoked_at is None:
                row.revoked_at = self._clock()
            return _public(row)

    def authenticate(self, token: str) -> str | None:
        """The owner of a live key, or None for a malformed, unknown or revoked token."""
        match = _TOKEN.fullmatch(token)
        if match is None:
            return None
        key_id, secret = match.groups()
        with self._store.session_scope() as session:
            row = session.execute(
                select(ApiKeyRow.secret_sha256, ApiKeyRow.owner, ApiKeyRow.revoked_at).where(ApiKeyRow.id == key_id)
            ).one_or_none()
        expected = row.secret_sha256 if row is not None else _NO_SUCH_SECRET
        matches = hmac.compare_digest(expected, _sha256(secret))
        if row is None or not matches or row.revoked_at is not None:
            return None
        return row.owner


def _public(row: ApiKeyRow) -> ApiKeyPublic:
    return ApiKeyPublic(id=row.id, owner=row.owner, created_at=row.created_at, revoked_at=row.revoked_at)
