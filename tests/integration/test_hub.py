"""The hub fans one Redis subscription out to many streams; a slow stream cannot hold up the others."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from litestar.channels import ChannelsPlugin
from redis.asyncio import Redis

from ackflow.db.accept import accept_request
from ackflow.db.transitions import transition
from ackflow.handlers import HandlerRegistry
from ackflow.ids import new_request_id
from ackflow.live import LiveEvent, encode_live_event, request_channel
from ackflow.settings import Settings
from activities.worker import register_kinds
from gateway.hub import (
    HAND_OUT_CHUNK,
    SUBSCRIBER_BUFFER,
    HubChannelsPlugin,
    ResilientPubSubBackend,
    StreamSubscriber,
    create_channels,
)
from gateway.streams import OVERFLOW, StreamEvent, Streams
from tests.conftest import Tenant
from tests.helpers import assert_eventually


async def test_a_slow_stream_overflows_and_is_told_to_reconnect_while_a_fast_one_keeps_up(
    settings: Settings, pool: asyncpg.Pool, redis: Redis, registry: HandlerRegistry, tenant: Tenant
) -> None:
    async with accepted_and_followed(settings, pool, redis, registry, tenant) as (request_id, streams):
        fast = streams.follow_request(tenant.id, request_id, 0)
        slow = streams.follow_request(tenant.id, request_id, 0)
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


async def _healthy(hub: ResilientPubSubBackend) -> bool:
    return hub.healthy


async def test_streams_that_see_done_before_processing_fill_the_gap_from_postgres_in_order(
    settings: Settings, pool: asyncpg.Pool, redis: Redis, registry: HandlerRegistry, tenant: Tenant
) -> None:
    async with accepted_and_followed(settings, pool, redis, registry, tenant) as (request_id, streams):
        followers = [streams.follow_request(tenant.id, request_id, 0) for _ in range(50)]
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


async def test_a_burst_reaches_every_subscriber_once_and_in_order_however_the_hand_out_is_chunked(
    redis: Redis,
) -> None:
    """Messages arriving while a hand-out is under way join it: the order per subscriber must hold."""
    channels, hub = create_channels(redis)
    async with channels:
        await assert_eventually(lambda: _healthy(hub), message="hub never connected")
        only_a = [await _subscribe(channels, ["a"]) for _ in range(HAND_OUT_CHUNK * 3)]
        a_and_b = [await _subscribe(channels, ["a", "b"]) for _ in range(HAND_OUT_CHUNK)]
        only_b = [await _subscribe(channels, ["b"]) for _ in range(10)]
        everyone = only_a + a_and_b + only_b
        await _until_every_subscriber_hears(redis, everyone)
        # The hub's own hand-out runs (it replaces a private hook of Litestar's plugin): its reader is up.
        assert any(task.get_name() == "hub-read" for task in asyncio.all_tasks())

        burst = [("a", b"a1"), ("b", b"b1"), ("a", b"a2"), ("a", b"a3"), ("b", b"b2")]
        async with redis.pipeline(transaction=False) as pipe:
            for channel, message in burst:
                pipe.publish(channel, message)
            await pipe.execute()
        for group, wanted in ((only_a, {"a"}), (a_and_b, {"a", "b"}), (only_b, {"b"})):
            expected = [message for channel, message in burst if channel in wanted]
            for subscriber in group:
                assert await _next_messages(subscriber, len(expected)) == expected
                assert await _next_messages(subscriber, 1, timeout=0) == []  # nothing twice
        for subscriber in everyone:
            await channels.unsubscribe(subscriber)


class FailsOnce(ResilientPubSubBackend):
    """Real Redis behind it, but the first read of events dies of a bug rather than a Redis error."""

    failed = False

    async def stream_events(self) -> AsyncIterator[tuple[str, bytes]]:  # type: ignore[override]
        if not self.failed:
            self.failed = True
            raise RuntimeError("a bug in the reader")
        async for message in super().stream_events():
            yield message


async def test_the_hub_restarts_a_reader_that_failed_and_live_events_flow_again(
    redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("gateway.hub.MAX_RECONNECT_SECONDS", 0.1)
    backend = FailsOnce(redis)
    channels = HubChannelsPlugin(backend=backend, arbitrary_channels_allowed=True, subscriber_class=StreamSubscriber)
    async with channels:
        subscriber = await _subscribe(channels, ["a"])
        await assert_eventually(lambda: _healthy(backend), message="the reader never came back")
        await _until_every_subscriber_hears(redis, [subscriber])
        await redis.publish("a", b"after the failure")
        assert await _next_messages(subscriber, 1) == [b"after the failure"]
    assert backend.failed


async def _subscribe(channels: ChannelsPlugin, names: list[str]) -> StreamSubscriber:
    subscriber = await channels.subscribe(names)
    assert isinstance(subscriber, StreamSubscriber)
    return subscriber


async def _until_every_subscriber_hears(redis: Redis, subscribers: list[StreamSubscriber]) -> None:
    """Redis subscribes asynchronously: probe until each subscriber has heard one, then drop the probes."""
    for _ in range(100):
        await redis.publish("a", b"probe")
        await redis.publish("b", b"probe")
        await asyncio.sleep(0.05)
        if all(subscriber.qsize for subscriber in subscribers):
            break
    await asyncio.sleep(0.2)  # the last probes land
    for subscriber in subscribers:
        while subscriber.qsize:
            assert await subscriber.next_message(0) == b"probe"


async def _next_messages(subscriber: StreamSubscriber, count: int, timeout: float = 10) -> list[bytes]:
    messages = []
    for _ in range(count):
        message = await subscriber.next_message(timeout)
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
    channels, hub = create_channels(redis)
    async with channels:
        streams = Streams(pool, channels, hub, keepalive_seconds=30, poll_seconds=1)
        await assert_eventually(lambda: _healthy(hub), message="hub never connected")
        yield row["id"], streams


async def publish_recorded(
    pool: asyncpg.Pool, redis: Redis, tenant: Tenant, request_id: uuid.UUID, events: list[tuple[int, str]]
) -> None:
    """Publish the request's recorded events (version, topic) on its channel, in the order given."""
    for version, topic in events:
        event = await pool.fetchrow(
            "SELECT id, data FROM request_events WHERE version = $1 AND request_id = $2", version, request_id
        )
        live = LiveEvent(event["id"], topic, str(request_id), str(tenant.id), version, event["data"])
        await redis.publish(request_channel(str(request_id)), encode_live_event(live))
