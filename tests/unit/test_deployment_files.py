"""The deployment files (docker-compose.yml, .env.example, deploy/Procfile, the Dockerfile,
docs/deployment.md) checked against the code, without Docker.

Why: nothing runs these files in the test suite, so a renamed setting or subcommand would
leave them silently wrong. Every ``ecrm`` command they start must parse as the CLI parses
it (subcommand and options), and every ``ECRM_*`` name they mention must be one that
``pipeline/settings.py`` reads.
"""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from click.exceptions import NoArgsIsHelpError

from workers.celery_app import ALL_QUEUES
from workers.cli import main

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
PROCFILE = ROOT / "deploy" / "Procfile"
DOCKERFILE = ROOT / "Dockerfile"
DOCS = ROOT / "docs" / "deployment.md"
SETTINGS_SOURCE = ROOT / "pipeline" / "settings.py"

_NAME = re.compile(r"ECRM_[A-Z0-9_]*[A-Z0-9]")
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_INTERPOLATED_REQUIRED = re.compile(r"^\$\{[A-Z0-9_]+:\?[^}]*\}$")
#: compose values that must never be written in the file itself
_SECRETS = (
    "ECRM_ADMIN_TOKEN",
    "ECRM_WRITE_KEYS",
    "ECRM_ERASURE_KEY",
    "POSTGRES_PASSWORD",
    "RABBITMQ_DEFAULT_PASS",
)


def real_settings() -> set[str]:
    """Every ``ECRM_*`` name pipeline/settings.py reads: its string constants, by AST.

    Why the source and not ``Settings.masked()``: field names are not always variable
    names (``log_json`` is read from ``ECRM_LOG_FORMAT``).
    """
    tree = ast.parse(SETTINGS_SOURCE.read_text())
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and re.fullmatch(r"ECRM_[A-Z0-9_]+", node.value)
    }


def unknown_settings(text: str) -> set[str]:
    """The ``ECRM_*`` names in ``text`` that pipeline/settings.py does not read."""
    return set(_NAME.findall(text)) - real_settings()


def check_ecrm_args(args: list[str], *, partial: bool = False) -> list[str]:
    """Parse ``ecrm ARGS`` as the CLI would, without running it; the command path.

    Raises :class:`click.UsageError` for an unknown subcommand or option. ``partial``: a
    mention in prose (``ecrm profiles erase``, ``ecrm keys``) may leave out required
    arguments and the subcommand; names and options must still be right.
    """
    parent = click.Context(main, info_name="ecrm")
    group: click.Group = main
    path: list[str] = []
    rest = list(args)
    while True:
        name, command, rest = group.resolve_command(parent, rest)
        assert command is not None and name is not None
        path.append(name)
        try:
            context = command.make_context(name, list(rest), parent=parent)
        except (click.MissingParameter, NoArgsIsHelpError):
            if partial:
                return path
            raise
        if not isinstance(command, click.Group):
            return path
        rest = [*context._protected_args, *context.args]
        if not rest:
            return path
        group, parent = command, context


def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(loaded, dict)
    return loaded


def hub_services(document: dict[str, Any]) -> dict[str, list[str]]:
    """Services running the hub's image -> their ``ecrm`` arguments."""
    out: dict[str, list[str]] = {}
    for name, service in document["services"].items():
        if "build" not in service and "ecrm" not in str(service.get("image", "")):
            continue
        command = service.get("command", ["serve"])  # the Dockerfile's CMD
        args = shlex.split(command) if isinstance(command, str) else list(command)
        entrypoint = service.get("entrypoint")
        if entrypoint is not None:
            entry = shlex.split(entrypoint) if isinstance(entrypoint, str) else entrypoint
            assert Path(entry[0]).name == "ecrm", f"{name}: entrypoint {entry} is not ecrm"
            args = [*entry[1:], *args]
        out[name] = args
    return out


def procfile() -> dict[str, list[str]]:
    """Process name -> ``ecrm`` arguments; environment assignments checked as settings."""
    out: dict[str, list[str]] = {}
    for line in PROCFILE.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, command = line.partition(":")
        assert sep and re.fullmatch(r"[a-z][a-z0-9_-]*", name), f"bad Procfile line {line!r}"
        words = shlex.split(command)
        while words and _ASSIGNMENT.match(words[0]):
            words.pop(0)
        assert words and words[0] == "ecrm", f"{name}: {command!r} does not run ecrm"
        out[name] = words[1:]
    return out


# --- the checkers themselves can fail ------------------------------------------------


def test_the_settings_registry_is_read_from_settings_py() -> None:
    names = real_settings()
    assert len(names) > 40
    assert {"ECRM_DATABASE_URL", "ECRM_BROKER_URL", "ECRM_ADMIN_TOKEN", "ECRM_LOG_FORMAT"} <= names
    assert "ECRM_LOG_JSON" not in names  # a field name, not a variable


def test_a_misspelt_setting_is_caught() -> None:
    assert unknown_settings("ECRM_DATABSE_URL=x ECRM_BROKER_URL=y") == {"ECRM_DATABSE_URL"}
    assert unknown_settings("the ECRM_* variables, ECRM_ alone") == set()


@pytest.mark.parametrize("args", [["serv"], ["worker", "--webhook"], ["webhooks", "prun"]])
def test_a_misspelt_command_is_caught(args: list[str]) -> None:
    with pytest.raises(click.UsageError):
        check_ecrm_args(args)


def test_real_commands_parse() -> None:
    assert check_ecrm_args(["worker", "--webhooks"]) == ["worker"]
    assert check_ecrm_args(["webhooks", "prune", "--older-than", "7d"]) == ["webhooks", "prune"]
    assert "scheduler" in main.list_commands(click.Context(main))


# --- docker-compose.yml --------------------------------------------------------------


def test_compose_parses_and_has_every_role() -> None:
    services = compose()["services"]
    assert {"postgres", "rabbitmq", "redis", "migrate", "api", "worker", "scheduler"} <= set(
        services
    )
    assert "redis" in services["redis"].get("profiles", [])  # the alternative, not default


def test_compose_commands_are_real_subcommands() -> None:
    roles = {name: check_ecrm_args(args) for name, args in hub_services(compose()).items()}
    assert roles["migrate"] == ["init"]
    assert roles["api"] == ["serve"]
    assert roles["worker"] == ["worker"]
    assert roles["scheduler"] == ["scheduler"]


def test_compose_runs_exactly_one_scheduler() -> None:
    document = compose()
    args = hub_services(document)
    schedulers = [
        name
        for name, argv in args.items()
        if check_ecrm_args(argv) == ["scheduler"] or (argv[:1] == ["worker"] and "--beat" in argv)
    ]
    assert schedulers == ["scheduler"]
    assert document["services"]["scheduler"].get("deploy", {}).get("replicas", 1) == 1


def test_compose_worker_can_be_scaled() -> None:
    worker = compose()["services"]["worker"]
    # a fixed name, hostname or host port would make --scale worker=4 collide
    assert not {"container_name", "hostname", "ports"} & set(worker)


def test_compose_waits_for_healthy_dependencies() -> None:
    document = compose()
    services = document["services"]
    for name in hub_services(document):
        depends = services[name]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy", name
        if name != "migrate":
            assert depends["migrate"]["condition"] == "service_completed_successfully", name
        for dependency in depends:
            assert "healthcheck" in services[dependency] or dependency == "migrate", dependency
    assert "/healthz" in " ".join(services["api"]["healthcheck"]["test"])


def test_compose_hard_codes_no_secret() -> None:
    for name, service in compose()["services"].items():
        environment = service.get("environment") or {}
        assert isinstance(environment, dict), f"{name}: environment as a mapping, please"
        for key in _SECRETS:
            if key in environment:
                value = str(environment[key])
                assert _INTERPOLATED_REQUIRED.match(value), f"{name}: {key}={value!r}"
    text = COMPOSE.read_text()
    # passwords inside URLs come from the environment too
    for url in re.findall(r"[a-z+]+://[^\s\"']+", text):
        if "@" in url:
            userinfo = url.split("://", 1)[1].split("@", 1)[0]
            assert ":" not in userinfo or "${" in userinfo, url


def test_compose_settings_are_real() -> None:
    assert unknown_settings(COMPOSE.read_text()) == set()


# --- .env.example ----------------------------------------------------------------------


def _env_example() -> dict[str, str]:
    values: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"not NAME=VALUE: {line!r}"
            values[key.strip()] = value
    return values


def test_env_example_settings_are_real() -> None:
    assert unknown_settings(ENV_EXAMPLE.read_text()) == set()


def test_env_example_fills_every_variable_compose_requires_and_no_secret() -> None:
    values = _env_example()
    required = set(re.findall(r"\$\{([A-Z0-9_]+):\?", COMPOSE.read_text()))
    assert required <= set(values), required - set(values)
    for key in (*_SECRETS, "RABBITMQ_PASSWORD"):
        assert values.get(key, "") == "", f"{key} must be left empty in .env.example"


# --- deploy/Procfile -----------------------------------------------------------------


def test_procfile_commands_are_real_subcommands() -> None:
    processes = procfile()
    assert {"web", "worker", "scheduler"} <= set(processes)
    roles = {name: check_ecrm_args(args) for name, args in processes.items()}
    assert roles["web"] == ["serve"]
    assert roles["worker"] == ["worker"]
    assert [name for name, role in roles.items() if role == ["scheduler"]] == ["scheduler"]
    assert not any("--beat" in args for args in processes.values())


def test_procfile_settings_are_real() -> None:
    assert unknown_settings(PROCFILE.read_text()) == set()


# --- Dockerfile and docs ---------------------------------------------------------------


def test_dockerfile_basics() -> None:
    lines = [line.strip() for line in DOCKERFILE.read_text().splitlines()]
    assert any(line.startswith("FROM python:3.11-slim") for line in lines)
    assert 'ENTRYPOINT ["ecrm"]' in lines
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    assert "constraints.txt" in DOCKERFILE.read_text()
    assert unknown_settings(DOCKERFILE.read_text()) == set()


def test_docs_settings_are_real() -> None:
    assert unknown_settings(DOCS.read_text()) == set()


def test_docs_commands_are_real() -> None:
    text = DOCS.read_text()
    spans = re.findall(r"```.*?```|`[^`]+`", text, flags=re.S)
    commands = [
        shlex.split(match)
        for span in spans
        for match in re.findall(r"(?<![\w/.\"-])ecrm [^`\n#;,()]*", span)
    ]
    assert len(commands) > 10
    for words in commands:
        check_ecrm_args(words[1:], partial=True)


def test_docs_name_every_queue() -> None:
    text = DOCS.read_text()
    for queue in ALL_QUEUES:
        assert f"`{queue}`" in text, queue
