"""The metrics are the catalogue dashboards query, named by Prometheus' conventions, with bounded labels."""

from __future__ import annotations

import asyncio
import re

import pytest
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from ackflow.errors import ConfigurationError
from ackflow.metrics import catalogue
from ackflow.metrics.scrape import ScrapeRefresh, dependency_check, token_matches
from ackflow.settings import Settings
from tests.metrics_catalogue import CATALOGUE

# A label named like any of these would carry one value per request, key or URL: unbounded series.
UNBOUNDED_LABEL = re.compile(r"(^|_)(id|ids|request|url|key|message|error|payload|path)($|_)")


def ackflow_metrics() -> list[MetricWrapperBase]:
    return [value for value in vars(catalogue).values() if isinstance(value, MetricWrapperBase)]


def exposed_families() -> dict[str, str]:
    text = generate_latest(REGISTRY).decode()
    families = {family.name: family.type for family in text_string_to_metric_families(text)}
    # The parser names a counter's family without `_total`; the exposition's TYPE line has it.
    typed = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE))
    return {**families, **typed}


def test_every_catalogue_metric_is_registered_with_its_type_and_labels() -> None:
    exposed = exposed_families()
    by_name = {metric._name + ("_total" if metric._type == "counter" else ""): metric for metric in ackflow_metrics()}
    for name, (kind, labels) in CATALOGUE.items():
        assert exposed.get(name) == kind, f"{name} is not exposed as a {kind}"
        assert tuple(by_name[name]._labelnames) == labels, name
    assert set(by_name) == set(CATALOGUE), "a metric outside the catalogue, or one missing from it"


def test_names_follow_prometheus_conventions() -> None:
    for metric in ackflow_metrics():
        name = metric._name
        assert name.startswith("ackflow_") and not name.endswith("_total"), name  # the client adds _total
        timed = re.search(r"_(duration|age|lag|wait)(_|$)", name) is not None
        assert name.endswith("_seconds") == timed, f"{name}: a time is in seconds, and says so"
    text = generate_latest(REGISTRY).decode()
    counters = re.findall(r"^# TYPE (ackflow_\S+) counter$", text, re.MULTILINE)
    assert counters and all(name.endswith("_total") for name in counters)


def test_no_label_could_hold_a_request_id_or_other_unbounded_value() -> None:
    for metric in ackflow_metrics():
        for label in metric._labelnames:
            assert not UNBOUNDED_LABEL.search(label), f"{metric._name}{{{label}}} would be unbounded"


def test_the_process_collectors_and_build_info_are_exposed() -> None:
    exposed = exposed_families()
    assert "process_cpu_seconds_total" in exposed or "python_info" in exposed
    assert catalogue.BUILD_INFO.labels(version=catalogue.ackflow_version())._value.get() == 1


def test_the_metrics_port_must_be_a_tcp_port() -> None:
    assert Settings.from_env({"ACKFLOW_METRICS_PORT": "9464"}).metrics_port == 9464
    assert Settings.from_env({}).metrics_port is None
    for bad in ("0", "65536", "http"):
        with pytest.raises(ConfigurationError, match="ACKFLOW_METRICS_PORT"):
            Settings.from_env({"ACKFLOW_METRICS_PORT": bad})


def test_the_metrics_token_never_appears_in_the_settings_repr() -> None:
    settings = Settings.from_env({"ACKFLOW_METRICS_TOKEN": "very-secret-token"})
    assert settings.metrics_token == "very-secret-token"
    assert "very-secret-token" not in repr(settings)


def test_the_token_check_wants_the_bearer_scheme_and_the_exact_token() -> None:
    assert token_matches("Bearer s3cret", "s3cret")
    assert token_matches("bearer s3cret", "s3cret")
    assert not token_matches("Bearer s3cre", "s3cret")
    assert not token_matches("Basic s3cret", "s3cret")
    assert not token_matches(None, "s3cret")


async def test_a_refresh_runs_at_most_once_a_second_and_a_slow_refresher_cannot_hang_it() -> None:
    refresh = ScrapeRefresh(min_interval=60.0, timeout=0.2)
    runs: list[str] = []

    async def quick() -> None:
        runs.append("quick")

    async def hangs() -> None:
        runs.append("hangs")
        await asyncio.Event().wait()

    with refresh.refreshing(quick, hangs):
        async with asyncio.timeout(2):
            await refresh.refresh()
            await refresh.refresh()  # within the interval: nothing runs
    assert runs == ["quick", "hangs"]
    with refresh.refreshing(quick):  # a role registering forces the next refresh
        await refresh.refresh()
    assert runs == ["quick", "hangs", "quick"]


async def test_a_dependency_that_fails_or_is_slow_reads_0_and_one_that_answers_reads_1() -> None:
    gauge = catalogue.DEPENDENCY_UP.labels(dependency="redis")

    async def answers() -> bool:
        return True

    async def refuses() -> None:
        raise ConnectionRefusedError("no")

    async def slow() -> None:
        await asyncio.sleep(5)

    await dependency_check("redis", answers)()
    assert gauge._value.get() == 1
    await dependency_check("redis", refuses)()
    assert gauge._value.get() == 0
    await dependency_check("redis", answers)()
    await dependency_check("redis", slow, timeout=0.05)()
    assert gauge._value.get() == 0
