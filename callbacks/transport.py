"""The webhook sender's HTTP transport: several small connection pools instead of one big one.

httpcore's pool looks at every connection it holds on each request and each response (with a
syscall per idle connection: encode/httpcore#928), so its cost per request grows with its size.
Measured here at 200 requests in flight: 2.0-2.5 ms of CPU a request over one pool of 200
connections, 0.5-0.65 ms over 25 pools of 8. A request counts as under way in its pool until its
response is closed, and goes to a pool with a free connection whenever there is one, preferring its
origin's own pool so that each host's connections are kept and reused.

Requests go to the SSRF-checked address, not the host name (see callbacks/sender.py), and httpcore
reuses a connection for any request to the same scheme, address and port. Two HTTPS hosts behind
one address would then share a TLS connection verified for only one of them. So a pool that holds
connections to an address for one TLS server name never takes that address for another name.

Both the pools and what each remembers are bounded, as the targets are partners' to choose: a pool
remembers at most `names_per_pool` addresses, and there are at most `max_pools` pools. A target no
pool may take gets a fresh pool in place of the least recently used idle one, whose connections are
closed. Only when every pool has a request in flight does one open beyond the bound; the next fresh
pool then replaces enough idle ones to restore it.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import httpx

CONNECTIONS_PER_POOL = 4
NAMES_PER_POOL = 256

Address = tuple[str, str, int | None]  # scheme, host (the checked IP address), port


@dataclass(eq=False)
class _Pool:
    """One httpcore pool, how many of its requests are under way, and the TLS server name its
    connections to each address use."""

    transport: httpx.AsyncHTTPTransport
    busy: int = 0
    names: dict[Address, str] = field(default_factory=dict)
    last_used: int = 0

    def may_take(self, address: Address, name: str, names_per_pool: int) -> bool:
        known = self.names.get(address)
        return known == name if known is not None else len(self.names) < names_per_pool


class SplitTransport(httpx.AsyncBaseTransport):
    """At most `max_connections` connections, in pools of `per_pool`, all kept alive between requests
    (and at most `max_pools` pools, twice as many as that needs by default, for hosts that share an address)."""

    def __init__(
        self,
        max_connections: int,
        *,
        per_pool: int = CONNECTIONS_PER_POOL,
        max_pools: int | None = None,
        names_per_pool: int = NAMES_PER_POOL,
    ) -> None:
        count = max(1, -(-max_connections // per_pool))
        self._limits = httpx.Limits(max_connections=per_pool, max_keepalive_connections=per_pool)
        self._ssl_context = httpx.create_ssl_context(trust_env=False)  # one for all pools: loading CAs is slow
        self._per_pool = per_pool
        self._max_pools = max(count, max_pools if max_pools is not None else 2 * count)
        self._names_per_pool = names_per_pool
        self._pools = [self._new_pool() for _ in range(count)]
        self._retired: list[httpx.AsyncHTTPTransport] = []  # evicted, idle, to be closed
        self._clock = itertools.count(1)

    @property
    def pool_count(self) -> int:
        return len(self._pools)

    @property
    def name_count(self) -> int:
        """How many (pool, address) -> TLS name entries are remembered."""
        return sum(len(pool.names) for pool in self._pools)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        pool = self.pick(request)
        pool.busy += 1  # before any await: a busy pool is never evicted
        try:
            while self._retired:
                await self._retired.pop().aclose()
            response = await pool.transport.handle_async_request(request)
        except BaseException:
            pool.busy -= 1
            raise
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _Counted(response.stream, lambda: self._release(pool))
        return response

    def pick(self, request: httpx.Request) -> _Pool:
        """The pool for `request`: its origin's own (so its connections are reused), or the next one with
        a free connection, or the least busy; never one holding connections to its address under
        another TLS server name."""
        url = request.url
        address = (url.scheme, url.host, url.port)
        name = str(request.extensions.get("sni_hostname", url.host))
        count = len(self._pools)
        home = hash((*address, name)) % count
        allowed = [
            self._pools[i]
            for i in itertools.chain(range(home, count), range(home))
            if self._pools[i].may_take(address, name, self._names_per_pool)
        ]
        if not allowed:
            allowed = [self._fresh_pool()]
        pool = next((p for p in allowed if p.busy < self._per_pool), None) or min(allowed, key=_busy)
        pool.names[address] = name
        pool.last_used = next(self._clock)
        return pool

    def _fresh_pool(self) -> _Pool:
        """A new pool for a target no pool may take: added while there are fewer than `max_pools`, else
        in place of the least recently used idle pool (and of more idle ones while over the bound)."""
        fresh = self._new_pool()
        idle = sorted((p for p in self._pools if p.busy == 0), key=lambda p: p.last_used)
        if len(self._pools) < self._max_pools or not idle:
            self._pools.append(fresh)
            return fresh
        evicted = idle[: len(self._pools) - self._max_pools + 1]
        self._retired.extend(pool.transport for pool in evicted)
        self._pools[self._pools.index(evicted[0])] = fresh  # in place: other origins keep their home pool
        for pool in evicted[1:]:
            self._pools.remove(pool)
        return fresh

    def _new_pool(self) -> _Pool:
        return _Pool(httpx.AsyncHTTPTransport(verify=self._ssl_context, trust_env=False, limits=self._limits))

    @staticmethod
    def _release(pool: _Pool) -> None:
        pool.busy -= 1

    async def aclose(self) -> None:
        for transport in [*self._retired, *(pool.transport for pool in self._pools)]:
            await transport.aclose()
        self._retired.clear()


def _busy(pool: _Pool) -> int:
    return pool.busy


class _Counted(httpx.AsyncByteStream):
    """A response body that tells its pool, once, that it is closed."""

    def __init__(self, stream: httpx.AsyncByteStream, release: Callable[[], None]) -> None:
        self._stream = stream
        self._release: Callable[[], None] | None = release

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            if self._release is not None:
                self._release()
                self._release = None
