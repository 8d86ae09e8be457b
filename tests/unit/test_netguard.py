"""SSRF protection: internal addresses are refused, public ones pass, URLs are checked strictly,
and a remembered DNS answer is checked again at every send."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from ackflow.netguard import Resolver, UnsafeUrl, check_target, check_url_syntax, is_internal


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.8.9.10",
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "240.0.0.1",
        "::1",
        "fe80::1",
        "fc00::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "::",
    ],
)
def test_internal_addresses_are_recognised(address: str) -> None:
    assert is_internal(address)


@pytest.mark.parametrize("address", ["93.184.216.34", "1.1.1.1", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_are_not_internal(address: str) -> None:
    assert not is_internal(address)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/x",
        "file:///etc/passwd",
        "http://",
        "http://user:pw@example.com/",
        "gopher://x",
        "x" * 3000,
        "http://example.com:99999/",
        "javascript:alert(1)",
    ],
)
def test_malformed_or_non_http_urls_are_refused(url: str) -> None:
    with pytest.raises(UnsafeUrl):
        check_url_syntax(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.1/",
        "http://localhost:8080/",
        "http://[::1]/",
        "http://0x7f000001/",
        "http://2130706433/",
        "http://metadata.google.internal/",
    ],
)
async def test_internal_targets_are_refused_in_production(url: str) -> None:
    with pytest.raises(UnsafeUrl) as refused:
        await check_target(url, allow_private=False)
    assert refused.value.status_code == 422 and refused.value.errors and refused.value.errors[0]["field"] == "url"


async def test_development_mode_allows_loopback_receivers() -> None:
    target = await check_target("http://127.0.0.1:9/hook", allow_private=True)
    assert target.addresses == ("127.0.0.1",) and target.port == 9 and target.host == "127.0.0.1"


async def test_an_ip_address_is_checked_without_resolving_it(monkeypatch: pytest.MonkeyPatch) -> None:
    lookups = _fake_dns(monkeypatch, "10.0.0.1")

    target = await check_target("http://93.184.216.34:8080/hook", allow_private=False)
    with pytest.raises(UnsafeUrl):
        await check_target("http://[::ffff:10.0.0.1]/hook", allow_private=False)

    assert target.addresses == ("93.184.216.34",) and lookups == []


async def test_a_remembered_answer_is_checked_again_at_every_send(monkeypatch: pytest.MonkeyPatch) -> None:
    lookups = _fake_dns(monkeypatch, "10.0.0.1")
    resolver = Resolver(ttl=60)

    allowed = await check_target("http://partner.example/hook", allow_private=True, resolver=resolver)
    with pytest.raises(UnsafeUrl):
        await check_target("http://partner.example/hook", allow_private=False, resolver=resolver)

    assert allowed.addresses == ("10.0.0.1",) and lookups == ["partner.example"]


async def test_a_rebinding_answer_within_the_ttl_is_never_used(monkeypatch: pytest.MonkeyPatch) -> None:
    lookups = _fake_dns(monkeypatch, "93.184.216.34")
    resolver = Resolver(ttl=60)
    first = await check_target("https://partner.example/hook", allow_private=False, resolver=resolver)

    _fake_dns(monkeypatch, "169.254.169.254")  # the attacker's DNS now points inside
    again = await check_target("https://partner.example/hook", allow_private=False, resolver=resolver)
    with pytest.raises(UnsafeUrl):  # and without a remembered answer the new one is refused
        await check_target("https://partner.example/hook", allow_private=False, resolver=Resolver())

    assert first.addresses == again.addresses == ("93.184.216.34",) and lookups == ["partner.example"]


def _fake_dns(monkeypatch: pytest.MonkeyPatch, address: str) -> list[str]:
    """Every name resolves to `address`; returns the names looked up."""
    lookups: list[str] = []

    async def getaddrinfo(self: asyncio.AbstractEventLoop, host: str, port: int, **_: object) -> list[Any]:
        lookups.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(asyncio.BaseEventLoop, "getaddrinfo", getaddrinfo)
    return lookups
