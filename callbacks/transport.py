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
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable

import httpx

CONNECTIONS_PER_POOL = 4


class SplitTransport(httpx.AsyncBaseTransport):
    """At most `max_connections` connections, in pools of `per_pool`, all kept alive between requests."""

    def __init__(self, max_connections: int, *, per_pool: int = CONNECTIONS_PER_POOL) -> None:
        count = max(1, -(-max_connections // per_pool))
        self._limits = httpx.Limits(max_connections=per_pool, max_keepalive_connections=per_pool)
        self._ssl_context = httpx.create_ssl_context(trust_env=False)  # one for all pools: loading CAs is slow
        self._pools = [
            httpx.AsyncHTTPTransport(verify=self._ssl_context, trust_env=False, limits=self._limits)
            for _ in range(count)
        ]
        self._busy = [0] * count
        self._per_pool = per_pool
        # (pool, (scheme, address, port)) -> the TLS server name its connections to that address use.
        self._names: dict[tuple[int, tuple[str, str, int | None]], str] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        index = self.pick(request)
        self._busy[index] += 1
        try:
            response = await self._pools[index].handle_async_request(request)
        except BaseException:
            self._busy[index] -= 1
            raise
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _Counted(response.stream, lambda: self._release(index))
        return response

    def pick(self, request: httpx.Request) -> int:
        """The pool for `request`: its origin's own (so its connections are reused), or the next one with
        a free connection, or the least busy; never one holding connections to its address under
        another TLS server name."""
        url = request.url
        address = (url.scheme, url.host, url.port)
        name = str(request.extensions.get("sni_hostname", url.host))
        count = len(self._pools)
        home = hash((*address, name)) % count
        allowed = [
            i for i in itertools.chain(range(home, count), range(home)) if self._names.get((i, address), name) == name
        ]
        if not allowed:  # every pool speaks to this address under another name: one more pool
            self._pools.append(httpx.AsyncHTTPTransport(verify=self._ssl_context, trust_env=False, limits=self._limits))
            self._busy.append(0)
            allowed = [count]
        index = next((i for i in allowed if self._busy[i] < self._per_pool), None)
        if index is None:
            index = min(allowed, key=self._busy.__getitem__)
        self._names[(index, address)] = name
        return index

    def _release(self, index: int) -> None:
        self._busy[index] -= 1

    async def aclose(self) -> None:
        for pool in self._pools:
            await pool.aclose()


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
