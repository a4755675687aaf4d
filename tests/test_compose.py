"""docker-compose.yml, the Dockerfile and .env.example, checked without a Docker engine.

The compose file is validated, after variable interpolation, against the Compose
Specification's JSON schema (tests/data/compose-spec.json, see its README), then against
this project's rules: every service has a healthcheck, start order follows health
(database -> server -> workers), only the server and the teacher publish ports and only on
127.0.0.1, no secret is written in the file, and names match the rest of the repository
(the worker's pool, the teacher's host and model in configs/cluster-example.yaml).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import urlparse

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "docker-compose.yml"
SCHEMA = Path(__file__).parent / "data" / "compose-spec.json"
ENV_EXAMPLE = REPO / ".env.example"
DOCKERFILE = REPO / "Dockerfile"

WORKERS = ("worker", "worker-gpu")
PORT_SERVICES = {"prefect-server", "vllm-teacher"}
SECRET_NAME = re.compile(r"(PASSWORD|SECRET|TOKEN|API_KEY|AUTH)", re.IGNORECASE)
# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}
VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def interpolate(node, env: dict[str, str]):
    """Compose-style ${VAR...} substitution over a parsed YAML tree (values only)."""
    if isinstance(node, dict):
        return {k: interpolate(v, env) for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate(v, env) for v in node]
    if not isinstance(node, str):
        return node

    def sub(m: re.Match) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        if name in env and (env[name] or not (op or "").startswith(":")):
            return env[name]
        if op and op.endswith("?"):
            raise KeyError(f"{name}: {arg}")
        return arg if op else ""

    return VAR.sub(sub, node)


def _uses_only_references(value: str) -> bool:
    """A value made of ${...} references (and text around them that holds no secret)."""
    return value == "" or bool(VAR.search(value))


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def compose(raw) -> dict:
    return interpolate(raw, {"POSTGRES_PASSWORD": "from-the-environment"})


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def test_valid_against_the_compose_specification(compose):
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft201909Validator(schema)
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_the_schema_check_can_fail(compose):
    schema = json.loads(SCHEMA.read_text())
    broken = json.loads(json.dumps(compose))
    broken["services"]["worker"]["depends_on"]["prefect-server"]["condition"] = "healthy-ish"
    broken["services"]["postgres"]["restartt"] = "always"
    assert len(list(jsonschema.Draft201909Validator(schema).iter_errors(broken))) >= 2


def test_required_password_fails_loudly_when_missing(raw):
    with pytest.raises(KeyError, match="POSTGRES_PASSWORD"):
        interpolate(raw, {})


def test_every_service_has_a_healthcheck(services):
    for name, svc in services.items():
        check = svc.get("healthcheck")
        assert check and check.get("test") and not check.get("disable"), f"{name}: no healthcheck"


def test_start_order_follows_health(services):
    def healthy_deps(name):
        deps = services[name].get("depends_on", {})
        assert isinstance(deps, dict), f"{name}: depends_on needs conditions"
        return {d for d, c in deps.items() if c.get("condition") == "service_healthy"}

    assert healthy_deps("prefect-server") == {"postgres"}
    for worker in WORKERS:
        assert "prefect-server" in healthy_deps(worker)
    assert "/api/health" in " ".join(services["prefect-server"]["healthcheck"]["test"])


def test_ports_only_for_server_and_teacher_and_only_on_loopback(services):
    published = {n for n, s in services.items() if s.get("ports")}
    assert published <= PORT_SERVICES and "prefect-server" in published
    for name in published:
        for port in services[name]["ports"]:
            assert str(port).startswith("127.0.0.1:"), f"{name}: {port} is open to the network"
    assert "4200" in str(services["prefect-server"]["ports"])


def test_no_literal_secrets(raw):
    offenders = []
    for name, svc in raw["services"].items():
        env = svc.get("environment") or {}
        if isinstance(env, list):
            env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
        for key, value in env.items():
            text = "" if value is None else str(value)
            if SECRET_NAME.search(key) and not _uses_only_references(text):
                offenders.append(f"{name}.{key}")
            creds = re.search(r"://([^:/@]+):(.*)@[^@]*$", text)  # user:password@host
            if creds and not VAR.fullmatch(creds.group(2)):
                offenders.append(f"{name}.{key} (password in URL)")
    assert offenders == []
    assert not re.search(r"PASSWORD\s*[:=]\s*[\"']?[A-Za-z0-9]", COMPOSE.read_text().replace(
        "${POSTGRES_PASSWORD", ""))  # fmt: skip


def test_env_example_documents_every_variable_without_values_for_secrets(raw):
    used = set(VAR.findall(COMPOSE.read_text()))
    names = {u[0] for u in used}
    example = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            example[key.strip()] = value.strip()
    assert names <= set(example), f"undocumented in .env.example: {sorted(names - set(example))}"
    for key, value in example.items():
        if SECRET_NAME.search(key):
            assert value == "", f".env.example must not hold a value for {key}"


def test_volumes_are_declared(compose):
    declared = set(compose.get("volumes") or {})
    for name, svc in compose["services"].items():
        for vol in svc.get("volumes", []):
            source = vol.split(":", 1)[0] if isinstance(vol, str) else vol.get("source")
            if source and not source.startswith((".", "/", "~")):
                assert source in declared, f"{name}: volume {source} not declared"


def test_names_match_the_repository(services):
    from deployments.deploy import DEFAULT_POOL

    for worker in WORKERS:
        cmd = services[worker]["command"]
        assert cmd[cmd.index("--pool") + 1] == DEFAULT_POOL
        env = services[worker]["environment"]
        assert env["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    cluster = yaml.safe_load((REPO / "configs" / "cluster-example.yaml").read_text())
    url = urlparse(cluster["teacher"]["base_url"])
    assert url.hostname in services, (
        f"the cluster config's teacher host {url.hostname} is no service"
    )
    vllm = services[url.hostname]["command"]
    assert vllm[vllm.index("--served-model-name") + 1] == cluster["teacher"]["model"]
    assert str(url.port) == vllm[vllm.index("--port") + 1]
    gpu = services[url.hostname]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"]
    assert services[url.hostname].get("profiles") == ["gpu"]


def test_dockerfile_is_slim_non_root_and_without_cpu_pins():
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim\s*$", text, re.MULTILINE)
    users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert users and users[-1] not in ("root", "0"), "the image must not run as root"
    last_run = max(i for i, ln in enumerate(text.splitlines()) if ln.startswith("RUN"))
    last_user = max(i for i, ln in enumerate(text.splitlines()) if ln.startswith("USER"))
    assert last_user > last_run, "USER must come after the installs"
    assert "constraints/cpu.txt" not in re.sub(r"#.*", "", text), (
        "GPU images must not pin CPU torch"
    )
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".venv", ".git", "runs", ".env"} <= set(ignored)
