"""ApiKeys: tokens shown once, only a hash stored, constant-time checks, revocation."""
from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import select

from service.store import ApiKeys, NotFound
from service.store.models import ApiKeyRow


@pytest.fixture
def keys(store, clock) -> ApiKeys:
    return ApiKeys(store, clock=clock)


def test_create_returns_the_token_once_and_stores_only_its_hash(keys, store):
    created = keys.create("alice")
    prefix, key_id, secret = created.token.split("_", 2)
    assert (prefix, key_id, created.key.owner, created.key.revoked_at) == ("bpk", created.key.id, "alice", None)
    assert len(secret) == 43
    with store.session_scope() as session:
        row = session.scalars(select(ApiKeyRow)).one()
        stored = [str(value) for value in (row.id, row.owner, row.secret_sha256, row.created_at)]
    assert row.secret_sha256 == hashlib.sha256(secret.encode()).hexdigest()
    assert not any(secret in value for value in stored)


def test_authenticate(keys):
    alice, bob = keys.create("alice"), keys.create("bob")
    assert keys.authenticate(alice.token) == "alice"
    assert keys.authenticate(bob.token) == "bob"
    key_id, secret = alice.token.split("_", 2)[1:]
    other_secret = bob.token.split("_", 2)[2]
    for token in (f"bpk_{key_id}_{other_secret}", f"bpk_{'f' * 16}_{secret}", "", "bpk_", alice.token + "=",
                  alice.token.upper(), f"xyz_{key_id}_{secret}"):
        assert keys.authenticate(token) is None, token


def test_revoke_and_list(keys, clock):
    alice, bob = keys.create("alice"), keys.create("bob")
    revoked = keys.revoke(alice.key.id)
    assert revoked.revoked_at is not None
    assert keys.authenticate(alice.token) is None and keys.authenticate(bob.token) == "bob"
    clock.advance(60)
    assert keys.revoke(alice.key.id).revoked_at == revoked.revoked_at  # the first revocation stands
    listed = keys.list()
    assert [(key.id, key.owner, key.revoked_at is not None) for key in listed] == [
        (alice.key.id, "alice", True), (bob.key.id, "bob", False)]
    assert [key.owner for key in keys.list(owner="bob")] == ["bob"]
    with pytest.raises(NotFound):
        keys.revoke("0" * 16)


@pytest.mark.parametrize("owner", ["", " alice", "a/b", "x" * 65, "../etc", "-lead"])
def test_owner_names_are_checked(keys, owner):
    with pytest.raises(ValueError, match="owner"):
        keys.create(owner)
