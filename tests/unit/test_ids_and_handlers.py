"""Request ids sort by creation time; the handler registry refuses ambiguous or malformed kinds."""

from __future__ import annotations

import time

import pytest

from ackflow.contracts import HandlerOptions
from ackflow.errors import ConfigurationError
from ackflow.handlers import HandlerRegistry, load_handler_modules
from ackflow.ids import new_request_id


def test_request_ids_are_uuid7_and_sort_in_creation_order() -> None:
    ids = []
    for _ in range(5):
        ids.append(new_request_id())
        time.sleep(0.002)  # into the next millisecond, the timestamp a UUIDv7 sorts by
    assert all(i.version == 7 and i.variant == "specified in RFC 4122" for i in ids)
    assert ids == sorted(ids)
    burst = [new_request_id() for _ in range(10_000)]  # many within one millisecond
    assert burst == sorted(burst) and len(set(burst)) == 10_000


async def _noop(payload: object) -> object:
    return payload


async def _other(payload: object) -> object:
    return None


def test_a_kind_can_only_have_one_handler() -> None:
    registry = HandlerRegistry()
    registry.add("resize", _noop, HandlerOptions())
    registry.add("resize", _noop, HandlerOptions())  # re-importing the same module is harmless
    with pytest.raises(ConfigurationError, match="registered twice"):
        registry.add("resize", _other, HandlerOptions())
    assert registry.kinds() == ["resize"]


@pytest.mark.parametrize("kind", ["", "Resize", "has space", "9lives", "x" * 65, "drop;table"])
def test_malformed_kinds_are_refused(kind: str) -> None:
    with pytest.raises(ConfigurationError, match="not valid"):
        HandlerRegistry().add(kind, _noop, HandlerOptions())


def test_loading_a_missing_handler_module_names_the_setting() -> None:
    with pytest.raises(ConfigurationError, match=r"ACKFLOW_HANDLERS names module 'nope\.missing'"):
        load_handler_modules(["nope.missing"])


def test_example_handlers_register_their_kinds_with_their_options() -> None:
    registry = load_handler_modules(["activities.examples"])
    assert {"echo", "sleep", "fail"} <= set(registry.kinds())
    sleep = registry.get("sleep")
    assert sleep is not None and sleep.options.heartbeat_seconds is not None


@pytest.mark.parametrize(
    "options",
    [
        {"initial_retry": 120.0, "max_retry": 60.0},
        {"initial_retry": 0.0},
        {"max_attempts": 0},
        {"timeout": 0.0},
        {"heartbeat_timeout": -1.0},
    ],
)
def test_impossible_handler_options_are_refused_at_registration(options: dict[str, float]) -> None:
    from ackflow.handlers import handler

    with pytest.raises(ConfigurationError, match="handler 'impossible'"):
        handler("impossible", **options)  # type: ignore[arg-type]
