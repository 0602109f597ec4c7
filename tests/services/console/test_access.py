"""Roles from scopes, the in-memory verifier, bounded sessions and CSRF tokens."""

from __future__ import annotations

import asyncio

import pytest

from services.console import Principal, Role, SessionStore, StaticKeyVerifier


def test_scopes_give_roles() -> None:
    assert Principal("a", frozenset({"admin"})).role is Role.OPERATOR
    assert Principal("a", frozenset({"read", "admin"})).role is Role.OPERATOR
    assert Principal("r", frozenset({"read"})).role is Role.READ_ONLY
    assert Principal("n", frozenset({"notify", "write"})).role is None


def test_static_verifier_knows_only_its_keys() -> None:
    alice = Principal("alice", frozenset({"admin"}))
    verifier = StaticKeyVerifier.of({"k1": alice})
    assert asyncio.run(verifier.verify("k1")) == alice
    assert asyncio.run(verifier.verify("k2")) is None
    assert asyncio.run(verifier.verify("")) is None


def test_sessions_expire_are_bounded_and_check_csrf() -> None:
    now = [0.0]
    store = SessionStore(ttl_s=10, max_sessions=2, clock=lambda: now[0])
    op = store.open(Principal("op", frozenset({"admin"})))
    assert store.get(op.token) is op
    assert op.can_act
    assert op.csrf_ok(op.csrf)
    assert not op.csrf_ok("forged")
    assert not op.csrf_ok(None)
    ro = store.open(Principal("ro", frozenset({"read"})))
    assert not ro.can_act
    store.open(Principal("third", frozenset({"read"})))
    assert store.get(op.token) is None  # the oldest was dropped at the bound
    now[0] = 11
    assert store.get(ro.token) is None  # expired
    with pytest.raises(ValueError, match="no console role"):
        store.open(Principal("n", frozenset({"notify"})))
