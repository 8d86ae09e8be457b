"""Capability tokens open one request's stream until they expire, and nothing else."""

from __future__ import annotations

import uuid

from gateway.capabilities import CapabilityTokens

REQUEST, OTHER_REQUEST, TENANT = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()


def test_a_token_opens_its_request_for_its_tenant_until_it_expires() -> None:
    tokens = CapabilityTokens(b"s" * 32, ttl_seconds=60)
    token = tokens.issue(REQUEST, TENANT, now=1_000_000)
    assert tokens.tenant_for(token, REQUEST, now=1_000_030) == TENANT
    assert tokens.tenant_for(token, REQUEST, now=1_000_061) is None, "expired"
    assert tokens.tenant_for(token, OTHER_REQUEST, now=1_000_030) is None, "another request"


def test_forged_tampered_or_malformed_tokens_open_nothing() -> None:
    tokens = CapabilityTokens(b"s" * 32, ttl_seconds=60)
    token = tokens.issue(REQUEST, TENANT, now=1_000_000)
    tenant_part, expires, signature = token.split(".")
    other_tenant = CapabilityTokens(b"s" * 32, 60).issue(REQUEST, uuid.uuid4(), now=1_000_000).split(".")[0]
    candidates = [
        CapabilityTokens(b"t" * 32, ttl_seconds=60).issue(REQUEST, TENANT, now=1_000_000),  # another secret
        f"{tenant_part}.{int(expires) + 3600}.{signature}",  # longer life, same signature
        f"{other_tenant}.{expires}.{signature}",  # another tenant
        f"{tenant_part}.{expires}.{signature[:-2]}AA",
        "",
        "a.b",
        "a.b.c.d",
        f"{tenant_part}.-1.{signature}",
        "x" * 500,
        "!!.1.!!",
    ]
    for candidate in candidates:
        assert tokens.tenant_for(candidate, REQUEST, now=1_000_010) is None, candidate
