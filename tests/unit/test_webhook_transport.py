"""The webhook transport's pools: HTTPS hosts behind one address never share a TLS connection, and what
the transport remembers stays bounded however many targets it sees."""

from __future__ import annotations

import httpx

from callbacks.transport import SplitTransport


def request_to(name: str, address: str = "203.0.113.7") -> httpx.Request:
    """A webhook request as the sender makes it: to the checked address, with the host as TLS server name."""
    return httpx.Request("POST", f"https://{address}/hook", extensions={"sni_hostname": name})


async def test_https_hosts_behind_one_address_are_never_given_the_same_pool() -> None:
    transport = SplitTransport(8, per_pool=4, max_pools=8)  # two pools to begin with, room for all five names
    names_per_pool: dict[object, set[str]] = {}

    for i in range(40):
        name = f"partner-{i % 5}.example"
        names_per_pool.setdefault(transport.pick(request_to(name)), set()).add(name)

    assert all(len(names) == 1 for names in names_per_pool.values()), names_per_pool
    assert len(names_per_pool) == 5, "each of the five names got a pool of its own"
    await transport.aclose()


async def test_one_host_keeps_to_its_pool_and_other_addresses_are_unaffected() -> None:
    transport = SplitTransport(8, per_pool=4)

    own = {transport.pick(request_to("partner.example")) for _ in range(10)}
    elsewhere = {transport.pick(request_to("other.example", address="198.51.100.9")) for _ in range(10)}

    assert len(own) == 1 and len(elsewhere) == 1  # nothing in flight: always the home pool
    assert transport.pick(request_to("partner.example")) in own
    await transport.aclose()


async def test_many_addresses_keep_the_pools_and_remembered_tls_names_bounded() -> None:
    transport = SplitTransport(8, per_pool=4, max_pools=4, names_per_pool=16)

    for i in range(5000):
        transport.pick(request_to(f"h{i}.example", address=f"198.51.{i // 250}.{i % 250}"))

        assert transport.pool_count <= 4 and transport.name_count <= 4 * 16, (i, transport.name_count)
    await transport.aclose()
