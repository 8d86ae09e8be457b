"""The Docker Compose stack and the image, checked statically: no Docker engine, no servers.

Each test reads docker-compose.yml, Dockerfile or .dockerignore and checks them against the
project itself (the `ackflow` argparse parser, the variables `ackflow.settings` reads, the
gateway's health route), so a renamed command, variable or route fails here and not on a
user's `docker compose up`.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import re
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from ackflow.cli import _parser
from ackflow.contracts import SEARCH_ATTRIBUTE_TYPES
from ackflow.settings import _ENV, Settings
from gateway.health import HealthController

ROOT = Path(__file__).resolve().parents[2]
ROLES = ("migrate", "gateway", "relay", "worker")
INFRASTRUCTURE = ("postgres", "redis", "temporal", "temporal-ui")  # the default stack; more under profiles
CONNECTION_VARIABLES = ("DATABASE_URL", "REDIS_URL", "TEMPORAL_ADDRESS")
HEALTH_CONDITIONS = {"service_healthy", "service_started", "service_completed_successfully"}


def _compose() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "docker-compose.yml").read_text()))


def _services() -> dict[str, dict[str, Any]]:
    return dict(_compose()["services"])


def _environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as a mapping, whether written as a mapping or as a list."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    return {str(name): str(value) for name, value in raw.items()}


def _depends_on(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    raw = service.get("depends_on") or {}
    if isinstance(raw, list):
        return {name: {} for name in raw}
    return dict(raw)


def _has_healthcheck(service: dict[str, Any]) -> bool:
    """True if the service reports a health status: a healthcheck test that is neither empty nor disabled."""
    check = service.get("healthcheck") or {}
    test = check.get("test")
    return bool(test) and not check.get("disable", False) and test not in (["NONE"], "NONE")


def _published_host_port(entry: str | int | dict[str, Any]) -> str:
    """The host side of a `ports` entry: "8000:8000", "127.0.0.1:8000:8000/tcp" or the long form."""
    if isinstance(entry, dict):
        return f"{entry.get('host_ip', '')}:{entry.get('published', '')}/{entry.get('protocol', 'tcp')}"
    text, _, protocol = str(entry).partition("/")
    parts = text.rsplit(":", 2)
    host_ip, host_port = (parts[0], parts[1]) if len(parts) == 3 else ("", parts[0])
    return f"{host_ip}:{host_port}/{protocol or 'tcp'}"


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs of the Dockerfile, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        pending += stripped.removesuffix("\\") + " "
        if not stripped.endswith("\\"):
            keyword, _, arguments = pending.strip().partition(" ")
            instructions.append((keyword.upper(), arguments.strip()))
            pending = ""
    return instructions


def _instruction_arguments(keyword: str) -> list[str]:
    return [arguments for name, arguments in _dockerfile() if name == keyword]


def test_compose_defines_the_infrastructure_and_every_ackflow_role() -> None:
    services = _services()

    missing = set(INFRASTRUCTURE + ROLES) - set(services)

    assert not missing, f"docker-compose.yml lacks services {sorted(missing)}"


def test_gateway_relay_worker_and_migrate_run_from_one_image_built_from_the_repository() -> None:
    services = _services()

    builds = {
        role: (json.dumps(services[role].get("build"), sort_keys=True), services[role].get("image")) for role in ROLES
    }

    assert len(set(builds.values())) == 1, f"the roles must share one build and image, got {builds}"
    build = services["gateway"]["build"]
    context = build if isinstance(build, str) else build.get("context", ".")
    assert (ROOT / context / "Dockerfile").is_file(), f"build context {context!r} has no Dockerfile"


@pytest.mark.parametrize("role", ROLES)
def test_each_role_command_is_the_ackflow_subcommand_of_that_name(role: str) -> None:
    command = _services()[role]["command"]
    argv = command.split() if isinstance(command, str) else [str(part) for part in command]

    try:
        args = _parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"{role}: `ackflow {' '.join(argv)}` is not a command the ackflow CLI accepts")

    assert args.command == role


@pytest.mark.parametrize("role", ROLES)
def test_roles_get_only_environment_variables_that_ackflow_settings_reads(role: str) -> None:
    known = {variable for variable, _ in _ENV.values()}

    unknown = set(_environment(_services()[role])) - known

    assert not unknown, f"{role} sets {sorted(unknown)}, which ackflow.settings never reads"


@pytest.mark.parametrize("role", ROLES)
def test_roles_get_the_database_redis_and_temporal_addresses_as_valid_settings(role: str) -> None:
    environment = _environment(_services()[role])

    unset = [variable for variable in CONNECTION_VARIABLES if not environment.get(variable)]
    settings = Settings.from_env(environment)  # raises ConfigurationError on a malformed value

    assert not unset, f"{role} lacks {unset}"
    assert settings.require("database_url", "redis_url", "temporal_address") is settings


def test_roles_share_the_connection_environment_written_once_in_x_ackflow_env() -> None:
    shared = _compose()["x-ackflow-env"]
    services = _services()

    differing = {
        role: name
        for role in ROLES
        for name, value in shared.items()
        if _environment(services[role]).get(name) != str(value)
    }

    assert set(CONNECTION_VARIABLES) <= set(shared)
    assert not differing, f"roles whose connection settings differ from x-ackflow-env: {differing}"


def test_connection_addresses_point_at_services_of_the_stack() -> None:
    environment = {name: str(value) for name, value in _compose()["x-ackflow-env"].items()}
    services = _services()

    hosts = {
        "DATABASE_URL": urlsplit(environment["DATABASE_URL"]).hostname,
        "REDIS_URL": urlsplit(environment["REDIS_URL"]).hostname,
        "TEMPORAL_ADDRESS": environment["TEMPORAL_ADDRESS"].rsplit(":", 1)[0],
    }

    assert hosts == {"DATABASE_URL": "postgres", "REDIS_URL": "redis", "TEMPORAL_ADDRESS": "temporal"}
    assert set(hosts.values()) <= set(services)


def test_database_url_carries_the_credentials_the_postgres_service_is_created_with() -> None:
    url = urlsplit(str(_compose()["x-ackflow-env"]["DATABASE_URL"]))
    postgres = _environment(_services()["postgres"])

    assert (url.username, url.password, url.path.lstrip("/")) == (
        postgres["POSTGRES_USER"],
        postgres["POSTGRES_PASSWORD"],
        postgres["POSTGRES_DB"],
    )


def test_worker_loads_handler_modules_that_exist() -> None:
    settings = Settings.from_env(_environment(_services()["worker"]))

    missing = [module for module in settings.handler_modules if importlib.util.find_spec(module) is None]

    assert settings.handler_modules, "the worker needs ACKFLOW_HANDLERS or it refuses to start"
    assert not missing, f"ACKFLOW_HANDLERS names modules that do not exist: {missing}"


def test_every_dependency_names_a_service_and_a_start_condition() -> None:
    services = _services()

    broken = {
        (name, target, condition.get("condition"))
        for name, service in services.items()
        for target, condition in _depends_on(service).items()
        if target not in services or condition.get("condition") not in HEALTH_CONDITIONS
    }

    assert not broken, f"(service, dependency, condition) with an unknown target or no condition: {broken}"


def test_every_health_conditioned_dependency_has_a_healthcheck() -> None:
    services = _services()

    unchecked = {
        (name, target)
        for name, service in services.items()
        for target, condition in _depends_on(service).items()
        if condition.get("condition") == "service_healthy" and not _has_healthcheck(services[target])
    }

    assert not unchecked, f"(service, dependency) waiting for a health status that nothing reports: {unchecked}"


@pytest.mark.parametrize("role", ("gateway", "relay", "worker"))
def test_long_running_roles_start_only_after_migrations_succeed(role: str) -> None:
    services = _services()

    dependency = _depends_on(services[role]).get("migrate", {})

    assert dependency.get("condition") == "service_completed_successfully"
    assert services["migrate"].get("restart", "no") in {"no", "on-failure"}, "a migrate that restarts never completes"


def test_published_host_ports_are_unique() -> None:
    published = [_published_host_port(entry) for service in _services().values() for entry in service.get("ports", [])]

    assert published, "the stack publishes no port at all"
    assert len(published) == len(set(published)), f"host ports published twice: {sorted(published)}"


def test_gateway_listens_on_all_interfaces_at_the_port_it_publishes() -> None:
    gateway = _services()["gateway"]
    settings = Settings.from_env(_environment(gateway))

    container_ports = {str(entry).rsplit(":", 1)[-1].partition("/")[0] for entry in gateway["ports"]}

    assert settings.http_host == "0.0.0.0", "bound to loopback, the gateway is unreachable through its published port"
    assert str(settings.http_port) in container_ports


def test_gateway_healthcheck_probes_the_readiness_route_without_curl() -> None:
    gateway = _services()["gateway"]
    settings = Settings.from_env(_environment(gateway))
    ready_path = HealthController.path + next(iter(HealthController.ready.paths))

    probe = " ".join(gateway["healthcheck"]["test"])

    assert f"http://127.0.0.1:{settings.http_port}{ready_path}" in probe
    assert "urllib.request" in probe and "curl" not in probe


def test_the_dev_temporal_registers_every_search_attribute_ackflow_sets_with_its_type() -> None:
    command = [str(part) for part in _services()["temporal-dev"]["command"]]

    registered = {command[i + 1] for i, part in enumerate(command[:-1]) if part == "--search-attribute"}

    assert {f"{name}={kind}" for name, kind in SEARCH_ATTRIBUTE_TYPES.items()} <= registered


def test_the_production_temporal_has_every_search_attribute_registered_by_the_roles() -> None:
    """auto-setup registers none of ackflow's: the relay and the worker add the missing ones on start-up."""
    from ackflow.temporal import SEARCH_ATTRIBUTES

    assert set(SEARCH_ATTRIBUTES) == set(SEARCH_ATTRIBUTE_TYPES)
    services = _services()
    assert {"relay", "worker"} <= {name for name in ROLES if "temporal" in _depends_on(services[name])}


def test_temporal_persists_to_its_own_databases_on_the_compose_postgres() -> None:
    services = _services()
    temporal = services["temporal"]
    environment = _environment(temporal)
    postgres = _environment(services["postgres"])

    assert temporal["image"].startswith("temporalio/auto-setup:") and "command" not in temporal
    assert environment["DB"] == "postgres12" and environment["POSTGRES_SEEDS"] == "postgres"
    assert (environment["POSTGRES_USER"], environment["POSTGRES_PWD"]) == (
        postgres["POSTGRES_USER"],
        postgres["POSTGRES_PASSWORD"],
    )
    assert {environment["DBNAME"], environment["VISIBILITY_DBNAME"]}.isdisjoint({postgres["POSTGRES_DB"]})
    assert _depends_on(temporal)["postgres"]["condition"] == "service_healthy"
    assert _has_healthcheck(temporal)


def test_the_dev_server_prometheus_and_grafana_run_only_under_their_profiles() -> None:
    services = _services()

    profiles = {name: service.get("profiles") for name, service in services.items() if service.get("profiles")}

    assert profiles == {"temporal-dev": ["dev"], "prometheus": ["observability"], "grafana": ["observability"]}
    assert all(not _depends_on(services[role]).keys() & profiles.keys() for role in ROLES + INFRASTRUCTURE)


def test_every_image_is_pinned_to_a_tag_other_than_latest() -> None:
    images = {name: str(service["image"]) for name, service in _services().items() if "build" not in service}

    unpinned = {name: image for name, image in images.items() if ":" not in image or image.endswith(":latest")}

    assert images and not unpinned, f"pin these images to a version: {unpinned}"


def test_every_file_the_stack_mounts_from_the_repository_exists() -> None:
    sources = [
        str(mount).split(":", 1)[0]
        for service in _services().values()
        for mount in service.get("volumes", [])
        if str(mount).startswith("./")
    ]

    assert sources, "nothing is mounted from deploy/"
    assert [source for source in sources if not (ROOT / source).exists()] == []


@pytest.mark.parametrize("role", ("gateway", "relay", "worker"))
def test_long_running_roles_log_json(role: str) -> None:
    settings = Settings.from_env(_environment(_services()[role]))

    assert settings.log_format == "json"


def test_prometheus_scrapes_each_role_at_the_service_and_port_it_serves_metrics_on() -> None:
    services = _services()
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    targets = {
        job["job_name"]: [target for static in job["static_configs"] for target in static["targets"]]
        for job in config["scrape_configs"]
    }
    gateway = Settings.from_env(_environment(services["gateway"]))
    expected = {"ackflow-gateway": [f"gateway:{gateway.http_port}"]}
    for role in ("relay", "worker"):
        environment = _environment(services[role])
        assert environment["ACKFLOW_METRICS_HOST"] == "0.0.0.0", f"{role} serves /metrics on loopback only"
        assert environment["ACKFLOW_METRICS_PORT"] in {str(port) for port in services[role].get("expose", [])}
        expected[f"ackflow-{role}"] = [f"{role}:{environment['ACKFLOW_METRICS_PORT']}"]

    assert targets == expected
    mounted = {str(mount).split(":")[1] for mount in services["prometheus"]["volumes"]}
    assert set(config["rule_files"]) | {"/etc/prometheus/prometheus.yml"} <= mounted


@pytest.mark.parametrize("service", ("postgres", "temporal-dev"))
def test_stateful_services_keep_their_data_in_named_volumes(service: str) -> None:
    compose = _compose()

    sources = {str(mount).split(":", 1)[0] for mount in compose["services"][service].get("volumes", [])}

    assert sources & set(compose.get("volumes") or {}), f"{service} keeps its data in no named volume"


def test_image_entrypoint_is_the_ackflow_command() -> None:
    entrypoints = _instruction_arguments("ENTRYPOINT")

    assert entrypoints and json.loads(entrypoints[-1]) == ["ackflow"]


def test_image_does_not_run_as_root() -> None:
    users = _instruction_arguments("USER")

    assert users, "the Dockerfile has no USER line: the roles would run as root"
    assert users[-1].partition(":")[0] not in {"root", "0"}


def test_image_installs_the_server_extra_and_no_dev_or_test_extras_on_python_slim() -> None:
    installs = [command for command in _instruction_arguments("RUN") if "pip install" in command]
    extras = {extra for command in installs for extra in re.findall(r"\.\[([^\]]*)\]", command)}

    assert _instruction_arguments("FROM") == ["python:3.12-slim"]
    assert any("pip install '.[server]' " in f"{command} " for command in installs), installs
    assert extras == {"server"}, f"extras other than the services installed: {installs}"


def test_image_copies_every_package_the_project_installs() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {pattern.rstrip("*") for pattern in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}

    copied = {source for arguments in _instruction_arguments("COPY") for source in arguments.split()[:-1]}

    assert packages <= copied, f"packages the image never copies: {sorted(packages - copied)}"
    assert {"pyproject.toml", pyproject["project"]["readme"], *pyproject["project"]["license-files"]} <= copied


def test_dockerignore_keeps_every_file_the_image_copies_in_the_build_context() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith(("#", "!"))
    ]
    copied = {source for arguments in _instruction_arguments("COPY") for source in arguments.split()[:-1]}

    excluded = {source for source in copied for pattern in patterns if fnmatch.fnmatch(source, pattern)}

    assert ".venv" in patterns and ".git" in patterns, "the build context would carry the virtualenv and history"
    assert not excluded, f".dockerignore drops files the Dockerfile copies: {sorted(excluded)}"
