"""Capability tokens open one request's stream until they expire, for the key that minted them, and nothing else."""

from __future__ import annotations

import uuid

from gateway.capabilities import CapabilityTokens, Grant

REQUEST, OTHER_REQUEST, TENANT, KEY = uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4()


def test_a_token_opens_its_request_for_its_tenant_until_it_expires() -> None:
    tokens = CapabilityTokens(b"s" * 32, ttl_seconds=60)
    token = tokens.issue(REQUEST, TENANT, KEY, now=1_000_000)
    assert tokens.grant_for(token, REQUEST, now=1_000_030) == Grant(TENANT, KEY)
    assert tokens.grant_for(token, REQUEST, now=1_000_061) is None, "expired"
    assert tokens.grant_for(token, OTHER_REQUEST, now=1_000_030) is None, "another request"


def test_forged_tampered_or_malformed_tokens_open_nothing() -> None:
    tokens = CapabilityTokens(b"s" * 32, ttl_seconds=60)
    token = tokens.issue(REQUEST, TENANT, KEY, now=1_000_000)
    tenant_part, key_part, expires, signature = token.split(".")
    other = CapabilityTokens(b"s" * 32, 60).issue(REQUEST, uuid.uuid4(), uuid.uuid4(), now=1_000_000).split(".")
    candidates = [
        CapabilityTokens(b"t" * 32, ttl_seconds=60).issue(REQUEST, TENANT, KEY, now=1_000_000),  # another secret
        f"{tenant_part}.{key_part}.{int(expires) + 3600}.{signature}",  # longer life, same signature
        f"{other[0]}.{key_part}.{expires}.{signature}",  # another tenant
        f"{tenant_part}.{other[1]}.{expires}.{signature}",  # another key
        f"{tenant_part}.{key_part}.{expires}.{flipped_first(signature)}",  # one changed byte
        f"{tenant_part}.{expires}.{signature}",  # the unbound form of before: no key
        "",
        "a.b",
        "a.b.c.d.e",
        f"{tenant_part}.{key_part}.-1.{signature}",
        f"{tenant_part}.{key_part}.\u00b2\u00b2.{signature}",  # digits, but not ASCII ones
        "x" * 500,
        "!!.!!.1.!!",
    ]
    for candidate in candidates:
        assert tokens.grant_for(candidate, REQUEST, now=1_000_010) is None, candidate


def flipped_first(text: str) -> str:
    """The text with its first base64 character changed, so the decoded bytes always differ."""
    return ("B" if text[0] == "A" else "A") + text[1:]


def test_tokens_of_the_form_before_keys_were_bound_are_told_apart() -> None:
    tokens = CapabilityTokens(b"s" * 32, ttl_seconds=60)
    assert tokens.unbound("dGVuYW50.1000060.c2ln")
    assert not tokens.unbound(tokens.issue(REQUEST, TENANT, KEY, now=1_000_000))
