"""SSRF protection for outbound webhooks: refuse URLs whose host resolves to an internal address.

Checked when an endpoint is registered and again before every send (the answer may change between
the two: DNS rebinding). The sender then connects to the address it checked, never resolving again;
it may reuse an answer a few seconds old (`Resolver`), which it checks again all the same.
Loopback, private, link-local (including cloud metadata at 169.254.169.254), shared, multicast,
reserved and unspecified addresses are refused unless the deployment allows private targets
(`ackflow dev` does, so local receivers work).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from ackflow.errors import InvalidInput

MAX_URL_LENGTH = 2048
_METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata", "instance-data"})


class UnsafeUrl(InvalidInput):
    """The URL is not one ackflow will send webhooks to."""

    type_slug = "unsafe-url"
    title = "Webhook URL refused"


@dataclass(frozen=True)
class CheckedTarget:
    """A URL and the addresses its host resolved to, all of them allowed."""

    url: str
    scheme: str
    host: str
    port: int
    addresses: tuple[str, ...]


def check_url_syntax(url: str, *, field: str = "url") -> tuple[str, str, int]:
    """(scheme, host, port) of an http(s) URL without credentials, or UnsafeUrl saying what is wrong."""
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeUrl(f"the URL is longer than {MAX_URL_LENGTH} characters", errors=_field("too long", field))
    if not url.isprintable():  # control characters (NUL, CR, LF, ...): no HTTP client can send them
        raise UnsafeUrl("the URL contains a control character", errors=_field("control character", field))
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise UnsafeUrl("the URL is not valid", errors=_field("not a URL", field)) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UnsafeUrl("the URL must be http:// or https:// with a host", errors=_field("not an http(s) URL", field))
    if parts.username or parts.password:
        raise UnsafeUrl("the URL must not contain credentials", errors=_field("credentials in URL", field))
    return parts.scheme, parts.hostname.lower().rstrip("."), port or (443 if parts.scheme == "https" else 80)


def is_internal(address: str) -> bool:
    """True for an address no public webhook should ever reach."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return bool(
        ip.is_loopback
        or ip.is_private
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or ip in ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT, used by some clouds internally
    )


class Resolver:
    """Resolves hosts for the webhook sender, remembering each answer for `ttl` seconds.

    Remembering is safe because the SSRF guarantee never rests on an answer being fresh: every send
    checks the addresses it is about to use, remembered or not, and connects to one of them. So a
    DNS change (or a rebinding attempt) reaches the sender at most `ttl` seconds late, and can never
    make it connect to an address that did not pass the check of that very send. Failures are not
    remembered. It saves a thread hop to getaddrinfo (and a DNS query) per send: 0.3 ms of CPU for
    `localhost`, more than the rest of the send.
    """

    def __init__(self, ttl: float = 10.0, max_hosts: int = 10_000) -> None:
        self._ttl = ttl
        self._max_hosts = max_hosts
        self._answers: dict[tuple[str, int], tuple[float, tuple[str, ...]]] = {}

    async def resolve(self, host: str, port: int, timeout: float, field: str) -> tuple[str, ...]:
        now = time.monotonic()
        remembered = self._answers.get((host, port))
        if remembered is not None and remembered[0] > now:
            return remembered[1]
        addresses = await _resolve(host, port, timeout, field)
        if len(self._answers) >= self._max_hosts:
            self._answers = {key: answer for key, answer in self._answers.items() if answer[0] > now}
        self._answers[(host, port)] = (now + self._ttl, addresses)
        return addresses


async def check_target(
    url: str, *, allow_private: bool, timeout: float = 5.0, field: str = "url", resolver: Resolver | None = None
) -> CheckedTarget:
    """Resolve the URL's host and refuse it if any address is internal (unless `allow_private`).

    `field` names the input in the error (`url` of an endpoint, `callback_url` of a request). With a
    `resolver`, a recent answer may be reused; the addresses are checked all the same.
    """
    scheme, host, port = check_url_syntax(url, field=field)
    if not allow_private and (host in _METADATA_HOSTS or host == "localhost" or host.endswith(".localhost")):
        raise UnsafeUrl(f"the host {host} is internal", errors=_field("internal host", field))
    addresses = _literal_address(host)
    if not addresses:
        resolve = resolver.resolve if resolver is not None else _resolve
        addresses = await resolve(host, port, timeout, field)
    if not allow_private:
        internal = [a for a in addresses if is_internal(a)]
        if internal:
            raise UnsafeUrl(
                f"the host {host} resolves to an internal address",  # which one is not the caller's to learn
                errors=_field("internal address", field),
            )
    return CheckedTarget(url, scheme, host, port, addresses)


def _literal_address(host: str) -> tuple[str, ...]:
    """The host itself if it is an IP address in standard form: nothing to resolve, so no thread hop
    to getaddrinfo. Other numeric forms (`2130706433`, `0x7f000001`, `127.1`) go through getaddrinfo,
    which reads them as the connection would."""
    try:
        return (str(ipaddress.ip_address(host)),)
    except ValueError:
        return ()


async def _resolve(host: str, port: int, timeout: float, field: str) -> tuple[str, ...]:
    try:
        infos = await asyncio.wait_for(
            asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM), timeout
        )
    except (TimeoutError, OSError, UnicodeError):  # UnicodeError: not a host name at all (`a..b`, a 64-char label)
        raise UnsafeUrl(f"the host {host} does not resolve", errors=_field("does not resolve", field)) from None
    return tuple(dict.fromkeys(str(info[4][0]) for info in infos))


def _field(message: str, field: str) -> list[dict[str, str]]:
    return [{"field": field, "in": "body", "message": message}]
