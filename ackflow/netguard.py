"""SSRF protection for outbound webhooks: refuse URLs whose host resolves to an internal address.

Checked when an endpoint is registered and again before every send (the answer may change between
the two: DNS rebinding). The sender then connects to the address it checked, never resolving again.
Loopback, private, link-local (including cloud metadata at 169.254.169.254), shared, multicast,
reserved and unspecified addresses are refused unless the deployment allows private targets
(`ackflow dev` does, so local receivers work).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
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


async def check_target(url: str, *, allow_private: bool, timeout: float = 5.0, field: str = "url") -> CheckedTarget:
    """Resolve the URL's host and refuse it if any address is internal (unless `allow_private`).

    `field` names the input in the error (`url` of an endpoint, `callback_url` of a request).
    """
    scheme, host, port = check_url_syntax(url, field=field)
    if not allow_private and (host in _METADATA_HOSTS or host == "localhost" or host.endswith(".localhost")):
        raise UnsafeUrl(f"the host {host} is internal", errors=_field("internal host", field))
    try:
        infos = await asyncio.wait_for(
            asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM), timeout
        )
    except (TimeoutError, OSError):
        raise UnsafeUrl(f"the host {host} does not resolve", errors=_field("does not resolve", field)) from None
    addresses = tuple(dict.fromkeys(str(info[4][0]) for info in infos))
    if not allow_private:
        internal = [a for a in addresses if is_internal(a)]
        if internal:
            raise UnsafeUrl(
                f"the host {host} resolves to an internal address ({internal[0]})",
                errors=_field("internal address", field),
            )
    return CheckedTarget(url, scheme, host, port, addresses)


def _field(message: str, field: str) -> list[dict[str, str]]:
    return [{"field": field, "in": "body", "message": message}]
