"""The hub fans one Redis subscription out to many streams; a slow stream cannot hold up the others."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from ackflow import devstack
from ackflow.db.accept import accept_request
from ackflow.db.transitions import transition
from ackflow.handlers import HandlerRegistry
from ackflow.ids import new_request_id
from ackflow.live import LiveEvent, encode_live_event, request_channel, tenant_channel
from ackflow.settings import Settings
from activities.worker import register_kinds
from gateway.event_filter import EVERY_EVENT
from gateway.hand_out import HandOut
from gateway.hub import HAND_OUT_CHUNK, HUB_CHANNEL, RESYNC, SUBSCRIBER_BUFFER, Hub, Message, Subscription
from gateway.open_streams import StreamLease
from gateway.stream_items import OVERFLOW, StreamEvent
from gateway.streams import Streams
from tests.conftest import Tenant
from tests.helpers import assert_eventually


def unrevoked(tenant_id: uuid.UUID) -> StreamLease:
    """A lease for a stream whose key is never revoked."""
    return StreamLease(tenant_id, uuid.uuid4(), lambda lease: None)


async def test_a_slow_stream_overflows_and_is_told_to_reconnect_while_a_fast_one_keeps_up(
    settings: Settings, pool: asyncpg.Pool, redis: Redis, registry: HandlerRegistry, tenant: Tenant
) -> None:
    async with accepted_and_followed(settings, pool, redis, registry, tenant) as (request_id, streams):
        fast = streams.follow_request(tenant.id, request_id, 0, unrevoked(tenant.id))
        slow = streams.follow_request(tenant.id, request_id, 0, unrevoked(tenant.id))
        assert isinstance(await anext(fast), StreamEvent)  # INIT, from Postgres; both now subscribed
        assert isinstance(await anext(slow), StreamEvent)
        fast_seen: list[StreamEvent] = []

        async def drain_fast() -> None:
            async for item in fast:
                if isinstance(item, StreamEvent):
                    fast_seen.append(item)

        fast_task = asyncio.create_task(drain_fast())
        noise = encode_live_event(LiveEvent(0, "request.processing", str(uuid.uuid4()), str(tenant.id), 2, {}))
        for _ in range(SUBSCRIBER_BUFFER * 3):  # messages the slow stream never reads
            await redis.publish(request_channel(str(request_id)), noise)
        await transition(pool, request_id, "PROCESSING", ("INIT",))
        await transition(pool, request_id, "DONE", ("PROCESSING",), result={"ok": True})
        await publish_recorded(pool, redis, tenant, request_id, [(2, "request.processing"), (3, "request.done")])

        await asyncio.wait_for(fast_task, timeout=10)
        assert [e.status for e in fast_seen] == ["PROCESSING", "DONE"]
        assert await asyncio.wait_for(anext(slow), timeout=10) is OVERFLOW
        await slow.aclose()


async def _healthy(hub: Hub) -> bool:
    return hub.healthy


async def test_streams_that_see_done_before_processing_fill_the_gap_from_postgres_in_order(
    settings: Settings, pool: asyncpg.Pool, redis: Redis, registry: HandlerRegistry, tenant: Tenant
) -> None:
    async with accepted_and_followed(settings, pool, redis, registry, tenant) as (request_id, streams):
        followers = [streams.follow_request(tenant.id, request_id, 0, unrevoked(tenant.id)) for _ in range(50)]
        for follower in followers:
            assert isinstance(await anext(follower), StreamEvent)  # INIT, from Postgres; now subscribed

        async def rest(follower: AsyncIterator[object]) -> list[str]:
            return [item.status async for item in follower if isinstance(item, StreamEvent)]

        tasks = [asyncio.create_task(rest(follower)) for follower in followers]
        await transition(pool, request_id, "PROCESSING", ("INIT",))
        await transition(pool, request_id, "DONE", ("PROCESSING",), result={"ok": True})
        await publish_recorded(  # out of order
            pool, redis, tenant, request_id, [(3, "request.done"), (2, "request.processing")]
        )

        seen = await asyncio.wait_for(asyncio.gather(*tasks), timeout=10)
        assert seen == [["PROCESSING", "DONE"]] * len(followers)


async def test_a_tenant_stream_fills_a_gap_in_one_request_from_postgres_and_drops_the_late_duplicate(
    settings: Settings, pool: asyncpg.Pool, redis: Redis, registry: HandlerRegistry, tenant: Tenant
) -> None:
    async with accepted_and_followed(settings, pool, redis, registry, tenant) as (request_id, streams):
        follower = streams.follow_tenant(tenant.id, 0, EVERY_EVENT, unrevoked(tenant.id))
        first = await anext(follower)  # INIT, from Postgres; now subscribed
        assert isinstance(first, StreamEvent) and first.status == "INIT"
        await transition(pool, request_id, "PROCESSING", ("INIT",))
        await transition(pool, request_id, "DONE", ("PROCESSING",), result={"ok": True})
        channel = tenant_channel(str(tenant.id))
        out_of_order = [(3, "request.done"), (2, "request.processing")]
        await publish_recorded(pool, redis, tenant, request_id, out_of_order, channel)
        later = LiveEvent(2**40, "request.progress", str(request_id), str(tenant.id), 4, {"status": "DONE"})
        await redis.publish(channel, encode_live_event(later))  # the next version: passed on as it is

        async def versions_until_4() -> list[int]:
            seen = []
            async for item in follower:
                if isinstance(item, StreamEvent):
                    seen.append(item.version)
                    if item.version == 4:
                        return seen
            return seen

        assert await asyncio.wait_for(versions_until_4(), timeout=10) == [2, 3, 4]
        await follower.aclose()


async def test_a_burst_reaches_every_subscription_once_and_in_order_however_the_hand_out_is_chunked(
    redis: Redis,
) -> None:
    """Messages arriving while a hand-out is under way join it: the order per subscription must hold."""
    async with Hub(redis) as hub, contextlib.AsyncExitStack() as stack:
        await assert_eventually(lambda: _healthy(hub), message="hub never connected")
        on_a = [await stack.enter_async_context(hub.subscribe("a")) for _ in range(HAND_OUT_CHUNK * 3)]
        on_b = [await stack.enter_async_context(hub.subscribe("b")) for _ in range(HAND_OUT_CHUNK + 10)]
        await _until_every_subscription_hears(redis, on_a + on_b)

        burst = [("a", b"a1"), ("b", b"b1"), ("a", b"a2"), ("a", b"a3"), ("b", b"b2")]
        async with redis.pipeline(transaction=False) as pipe:
            for channel, message in burst:
                pipe.publish(channel, message)
            await pipe.execute()
        for group, wanted in ((on_a, "a"), (on_b, "b")):
            expected = [message for channel, message in burst if channel == wanted]
            for subscription in group:
                assert await _next_messages(subscription, len(expected)) == expected
                assert await _next_messages(subscription, 1, timeout=0) == []  # nothing twice


class FailsOnce(Redis):
    """Real Redis behind it, but the hub's first attempt to open pub/sub dies of a bug, not a Redis error."""

    failed = False

    def pubsub(self, **kwargs: Any) -> PubSub:
        if not self.failed:
            self.failed = True
            raise RuntimeError("a bug in the reader")
        return super().pubsub(**kwargs)


async def test_the_hub_restarts_a_reader_that_failed_and_live_events_flow_again(
    redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("gateway.hub.MAX_RECONNECT_SECONDS", 0.1)
    failing = FailsOnce(connection_pool=redis.connection_pool)  # closed with the fixture's client
    async with Hub(failing) as hub, hub.subscribe("a") as subscription:
        await assert_eventually(lambda: _healthy(hub), message="the reader never came back")
        await _until_every_subscription_hears(redis, [subscription])
        await redis.publish("a", b"after the failure")
        assert await _next_messages(subscription, 1) == [b"after the failure"]
    assert failing.failed


async def test_the_hub_restarts_a_hand_out_that_failed_and_its_streams_catch_up_then_hear_live_events(
    redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    give_chunk = HandOut.give_chunk
    failed: list[bool] = []

    def fails_once(hand_out: HandOut) -> None:
        if not failed:
            failed.append(True)
            raise RuntimeError("a bug in the hand-out")
        give_chunk(hand_out)

    async with Hub(redis) as hub, hub.subscribe("a") as subscription:
        await assert_eventually(lambda: _healthy(hub), message="hub never connected")
        await _until_every_subscription_hears(redis, [subscription])
        monkeypatch.setattr(HandOut, "give_chunk", fails_once)
        await redis.publish("a", b"lost to the bug")
        assert await _next_messages(subscription, 1) == [RESYNC], "streams must read Postgres at once"
        await assert_eventually(lambda: _healthy(hub), message="the hub never recovered")

        async def hears_live_events() -> bool:
            await redis.publish("a", b"live")
            while (message := await subscription.next(1)) is RESYNC:
                pass  # the reader reconnected: catch up once more
            return message == b"live"

        await assert_eventually(hears_live_events, message="live events never flowed again")
    assert failed


class HeldSubscribe(Redis):
    """Real Redis, but a hub SUBSCRIBE naming channel `held` waits until the test releases it."""

    def __init__(self, *, held: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.held = held
        self.reached, self.released = asyncio.Event(), asyncio.Event()

    def pubsub(self, **kwargs: Any) -> PubSub:
        return HeldPubSub(self, self.connection_pool, **kwargs)


class HeldPubSub(PubSub):
    def __init__(self, gate: HeldSubscribe, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._gate = gate

    async def subscribe(self, *args: Any, **kwargs: Any) -> None:
        if self._gate.held in args:
            self._gate.reached.set()
            await self._gate.released.wait()
        await super().subscribe(*args, **kwargs)


async def test_a_stream_that_leaves_while_the_hub_connects_leaves_no_redis_subscription_behind(redis: Redis) -> None:
    held = HeldSubscribe(held="a", connection_pool=redis.connection_pool)  # closed with the fixture's client
    async with Hub(held) as hub:
        async with hub.subscribe("a"):
            await asyncio.wait_for(held.reached.wait(), 10)  # the hub is subscribing to "a" with its own channel
        held.released.set()

        async def only_the_hub_channel() -> bool:
            numsub = await redis.pubsub_numsub(HUB_CHANNEL, "a")
            counts = {name.decode() if isinstance(name, bytes) else name: count for name, count in numsub}
            return counts[HUB_CHANNEL] >= 1 and counts["a"] == 0  # one SUBSCRIBE named both

        await assert_eventually(only_the_hub_channel, message="Redis still sends `a` to a hub that no stream follows")


async def test_a_second_stream_on_a_channel_waits_until_redis_has_the_first_ones_subscribe(redis: Redis) -> None:
    held = HeldSubscribe(held="a", connection_pool=redis.connection_pool)
    async with Hub(held) as hub:
        await assert_eventually(lambda: _healthy(hub), message="hub never connected")
        first, second = hub.subscribe("a"), hub.subscribe("a")
        first_in = asyncio.create_task(first.__aenter__())
        await asyncio.wait_for(held.reached.wait(), 10)
        second_in = asyncio.create_task(second.__aenter__())
        done, _ = await asyncio.wait({first_in, second_in}, timeout=0.1)
        assert not done, "Redis does not have `a` yet: no stream on it may read Postgres"
        held.released.set()
        subscriptions = [await asyncio.wait_for(entering, 10) for entering in (first_in, second_in)]
        await _until_every_subscription_hears(redis, subscriptions)
        await second.__aexit__(None, None, None)
        await first.__aexit__(None, None, None)


async def test_the_hub_tells_every_subscription_to_resync_when_redis_is_lost_and_when_it_is_back(
    server_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("gateway.hub.MAX_RECONNECT_SECONDS", 0.2)
    port = devstack.free_port()
    server = devstack.start_redis(server_dir, port)
    server.wait_until_ready()
    redis = Redis(host="127.0.0.1", port=port, socket_timeout=1, socket_connect_timeout=1)
    try:
        async with Hub(redis) as hub, hub.subscribe("a") as subscription:
            await assert_eventually(lambda: _healthy(hub), message="hub never connected")
            await _until_every_subscription_hears(redis, [subscription])

            server.stop()
            assert await _next_messages(subscription, 1) == [RESYNC], "streams must read Postgres at once"
            assert not hub.healthy

            server = devstack.start_redis(server_dir, port)
            server.wait_until_ready()
            assert await _next_messages(subscription, 1, timeout=20) == [RESYNC], "what was missed must be read"
            assert hub.healthy
            await _until_every_subscription_hears(redis, [subscription])  # live events flow again
    finally:
        await redis.aclose()
        server.stop()


async def _until_every_subscription_hears(redis: Redis, subscriptions: list[Subscription]) -> None:
    """Redis subscribes asynchronously: probe until each subscription has heard one, then publish a
    fence on every channel and drain each subscription up to it, so no probe is left to arrive."""

    async def everyone_heard() -> bool:
        for channel in ("a", "b"):
            await redis.publish(channel, b"probe")
        return all(subscription.pending for subscription in subscriptions)

    await assert_eventually(everyone_heard, message="some subscription never heard a probe")
    for channel in ("a", "b"):
        await redis.publish(channel, b"fence")  # after every probe on its channel, so it arrives last
    for subscription in subscriptions:
        while (message := await subscription.next(10)) == b"probe":
            pass
        assert message == b"fence"


async def _next_messages(subscription: Subscription, count: int, timeout: float = 10) -> list[Message]:
    messages = []
    for _ in range(count):
        message = await subscription.next(timeout)
        if message is None:
            break
        messages.append(message)
    return messages


@contextlib.asynccontextmanager
async def accepted_and_followed(
    settings: Settings, pool: asyncpg.Pool, redis: Redis, registry: HandlerRegistry, tenant: Tenant
) -> AsyncIterator[tuple[uuid.UUID, Streams]]:
    """An accepted echo request, and Streams on a hub that has connected to Redis."""
    await register_kinds(pool, registry, settings.task_queue)
    row = await accept_request(pool, new_request_id(), tenant.id, "echo", {})
    async with Hub(redis) as hub:
        streams = Streams(pool, hub, keepalive_seconds=30, poll_seconds=1)
        await assert_eventually(lambda: _healthy(hub), message="hub never connected")
        yield row["id"], streams


async def publish_recorded(
    pool: asyncpg.Pool,
    redis: Redis,
    tenant: Tenant,
    request_id: uuid.UUID,
    events: list[tuple[int, str]],
    channel: str | None = None,
) -> None:
    """Publish the request's recorded events (version, topic) on its channel (or `channel`), in the order given."""
    for version, topic in events:
        event = await pool.fetchrow(
            "SELECT id, data FROM request_events WHERE version = $1 AND request_id = $2", version, request_id
        )
        live = LiveEvent(event["id"], topic, str(request_id), str(tenant.id), version, event["data"])
        await redis.publish(channel or request_channel(str(request_id)), encode_live_event(live))
