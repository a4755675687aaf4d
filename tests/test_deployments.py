"""deployments/: prefect.yaml, the Kubernetes GPU job template, deploy.py and `fdd deploy`.

No server here: prefect.yaml is checked with Prefect's own prefect.yaml model and against
this repository (entrypoints, configs, pools, cron strings); deployment objects are built
with `build_deployment` and their parameters checked against the flow's parameter schema,
which is what the server enforces. The real server path is tests/test_prefect_server.py.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from deployments import deploy as dep
from fdd_core.config import config_from_dict, load_config

REPO = Path(__file__).resolve().parents[1]
PREFECT_YAML = REPO / "deployments" / "prefect.yaml"
K8S_TEMPLATE = REPO / "deployments" / "kubernetes-gpu-job-template.json"
POOL_KINDS = {"process": "process", "docker_gpu": "docker", "kubernetes_gpu": "kubernetes"}


@pytest.fixture(scope="module")
def prefect_yaml() -> dict:
    return yaml.safe_load(PREFECT_YAML.read_text())


@pytest.fixture(scope="module")
def k8s_template() -> dict:
    return json.loads(K8S_TEMPLATE.read_text())


def _pool(prefect_yaml, kind: str) -> dict:
    return prefect_yaml["definitions"]["work_pools"][kind]


def _deployments_on(prefect_yaml, kind: str) -> list[dict]:
    name = _pool(prefect_yaml, kind)["name"]
    return [d for d in prefect_yaml["deployments"] if d["work_pool"]["name"] == name]


# --------------------------------------------------------------------------- prefect.yaml


def test_prefect_yaml_passes_prefects_own_model(prefect_yaml):
    from prefect.cli.deploy._models import PrefectYamlModel

    model = PrefectYamlModel.model_validate(prefect_yaml)
    assert model.build is None and model.push is None  # nothing built or pushed
    assert [next(iter(step)) for step in model.pull] == [
        "prefect.deployments.steps.set_working_directory"
    ]
    assert len(model.deployments) == 3


def test_entrypoints_name_a_flow_function_in_an_existing_file(prefect_yaml):
    for d in prefect_yaml["deployments"]:
        path, func = d["entrypoint"].split(":")
        source = REPO / path
        assert source.is_file(), f"{d['name']}: {path} does not exist"
        tree = ast.parse(source.read_text())
        fn = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == func), None)
        assert fn is not None, f"{d['name']}: no function {func} in {path}"
        decorators = [ast.unparse(x) for x in fn.decorator_list]
        assert any(x.startswith("flow") for x in decorators), f"{func} is not a @flow"


def test_schedules_are_valid_cron_with_a_known_timezone(prefect_yaml):
    from prefect.client.schemas.schedules import CronSchedule

    seen = 0
    for d in prefect_yaml["deployments"]:
        for s in d.get("schedules", []):
            CronSchedule(cron=s["cron"], timezone=s.get("timezone"))
            seen += 1
    assert seen == len(prefect_yaml["deployments"])
    with pytest.raises(ValueError):
        CronSchedule(cron="0 3 * *")  # the check above can fail


def test_every_deployment_uses_a_defined_pool_and_every_kind_is_used(prefect_yaml):
    pools = prefect_yaml["definitions"]["work_pools"]
    assert set(pools) == set(POOL_KINDS)
    names = {p["name"] for p in pools.values()}
    assert len(names) == len(pools)
    used = {d["work_pool"]["name"] for d in prefect_yaml["deployments"]}
    assert used == names


def test_inline_configs_equal_the_config_files_they_name(prefect_yaml):
    for d in prefect_yaml["deployments"]:
        match = re.search(r"Config: (\S+\.yaml)", d["description"])
        assert match, f"{d['name']}: description must name its config file"
        path = REPO / match.group(1)
        inline = d["parameters"]["config"]
        assert inline == yaml.safe_load(path.read_text()), (
            f"{d['name']}: the inline config differs from {match.group(1)}; copy the file "
            "into deployments/prefect.yaml again"
        )
        config_from_dict(inline, source=f"prefect.yaml:{d['name']}")  # and it validates


def test_docker_job_variables_fit_the_docker_worker_template(prefect_yaml):
    prefect_docker = pytest.importorskip("prefect_docker.worker", reason="needs prefect-docker")
    variables = prefect_docker.DockerWorker.get_default_base_job_template()["variables"]
    job_vars = _pool(prefect_yaml, "docker_gpu")["job_variables"]
    assert set(job_vars) <= set(variables["properties"]), set(job_vars) - set(
        variables["properties"]
    )
    jsonschema.validate(job_vars, variables)
    gpus = job_vars["container_create_kwargs"]["device_requests"]
    from docker.types import DeviceRequest

    assert [DeviceRequest(**g)["Capabilities"] for g in gpus] == [[["gpu"]]]


# --------------------------------------------------------------------------- Kubernetes


def _placeholders(node) -> set[str]:
    text = json.dumps(node)
    return set(re.findall(r"\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}", text))


def test_k8s_template_declares_every_placeholder(k8s_template):
    declared = set(k8s_template["variables"]["properties"])
    used = _placeholders(k8s_template["job_configuration"])
    assert used <= declared, used - declared
    assert {"gpu_count", "node_selector", "tolerations", "env_from", "volumes"} <= used


def test_k8s_job_variables_validate_against_the_template(prefect_yaml, k8s_template):
    job_vars = _pool(prefect_yaml, "kubernetes_gpu")["job_variables"]
    jsonschema.validate(job_vars, k8s_template["variables"])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**job_vars, "gpu_count": -1}, k8s_template["variables"])


def test_k8s_template_extends_the_installed_default(k8s_template):
    worker = pytest.importorskip("prefect_kubernetes.worker", reason="needs prefect-kubernetes")
    default = worker.KubernetesWorker.get_default_base_job_template()
    missing = set(default["variables"]["properties"]) - set(k8s_template["variables"]["properties"])
    assert not missing, f"variables of prefect-kubernetes' default template lost: {missing}"


def test_k8s_template_renders_a_gpu_job_manifest(prefect_yaml, k8s_template):
    worker = pytest.importorskip("prefect_kubernetes.worker", reason="needs prefect-kubernetes")
    from prefect.utilities.templating import apply_values

    # What the worker does with a flow run's job variables (minus resolving block and
    # variable references, which needs a server and this template has none of).
    job_vars = _pool(prefect_yaml, "kubernetes_gpu")["job_variables"]
    props = k8s_template["variables"]["properties"]
    values = {k: v["default"] for k, v in props.items() if "default" in v} | job_vars
    populated = apply_values(k8s_template["job_configuration"], values)
    # The worker's own model validates the manifest (required paths, fixed values).
    cfg = worker.KubernetesWorkerJobConfiguration(**populated)
    pod = cfg.job_manifest["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["resources"]["requests"]["memory"] == "64Gi"
    assert container["image"] == job_vars["image"]
    assert pod["nodeSelector"] == job_vars["node_selector"]
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"  # the template's default
    assert container["envFrom"] == [{"secretRef": {"name": "fdd-secrets"}}]
    assert {v["name"] for v in pod["volumes"]} == {"shared", "dshm"}
    assert cfg.namespace == "fdd"


# --------------------------------------------------------------------------- deploy.py


@pytest.fixture()
def tiny_config(tmp_path) -> Path:
    path = tmp_path / "nightly.yaml"
    path.write_text("orchestration:\n  shard_size: 7\nstorage:\n  root: /shared/runs\n")
    return path


def test_spec_validates_config_and_names_the_deployment(tiny_config):
    spec = dep.make_spec(tiny_config, cron="0 3 * * *", overrides=["teacher.n_samples=3"])
    assert spec.name == "nightly"
    assert spec.work_pool == dep.DEFAULT_POOL
    cfg = spec.parameters["config"]
    assert cfg == load_config(tiny_config, ["teacher.n_samples=3"]).model_dump(mode="json")
    assert cfg["orchestration"]["shard_size"] == 7 and cfg["teacher"]["n_samples"] == 3
    assert spec.tags == ("fdd",)
    assert spec.module_entrypoint == "flows.distill.fdd_distill"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cron": "every night"}, "not a valid cron"),
        ({"overrides": ["teacher.n_sampels=3"]}, "teacher.n_sampels"),
        ({"source": "https://example.org/fdd.git", "image": "fdd:1"}, "not both"),
        ({"entrypoint": "flows.distill.fdd_distill"}, "path/to/file.py:flow_function"),
    ],
)
def test_spec_errors_say_what_to_fix(tiny_config, kwargs, message):
    with pytest.raises(dep.DeployError, match=re.escape(message)):
        dep.make_spec(tiny_config, **kwargs)


def test_process_deployment_runs_this_checkout_with_its_parameters(tiny_config):
    spec = dep.make_spec(tiny_config, "gpu-pool", cron="15 4 * * *", timezone="Europe/Paris",
                         job_variables={"env": {"A": "1"}}, tags=["nightly"])  # fmt: skip
    d = dep.build_deployment(spec)
    assert (d.flow_name, d.name, d.entrypoint) == ("fdd-distill", "nightly", dep.DISTILL_ENTRYPOINT)
    assert Path(d.storage.to_pull_step()["prefect.deployments.steps.set_working_directory"]
                ["directory"]) == dep.PROJECT_ROOT  # fmt: skip
    assert d.work_pool_name == "gpu-pool" and d.job_variables == {"env": {"A": "1"}}
    assert [(s.schedule.cron, s.schedule.timezone) for s in d.schedules] == [
        ("15 4 * * *", "Europe/Paris")
    ]
    assert d.tags == ["fdd", "nightly"]
    assert d.version == spec.config.config_hash()
    # The server enforces the flow's parameter schema: the parameters must satisfy it.
    schema = d._parameter_openapi_schema.model_dump()
    jsonschema.validate(d.parameters, schema)
    broken = json.loads(json.dumps(d.parameters))
    broken["config"]["teacher"]["n_samples"] = "many"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_image_deployment_imports_the_flow_by_module_path(tiny_config):
    spec = dep.make_spec(tiny_config, "fdd-k8s-gpu", image="ghcr.io/your-org/fdd:1.0")
    d = dep.build_deployment(spec)
    assert d.entrypoint == "flows.distill.fdd_distill"
    assert d.storage is None  # nothing pulled: the image holds the code


def test_deploy_without_a_server_says_how_to_get_one(tiny_config):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with (
        temporary_settings(updates={PREFECT_API_URL: None}),
        pytest.raises(dep.DeployError, match="PREFECT_API_URL"),
    ):
        dep.deploy(tiny_config)


def test_unreachable_server_is_a_clear_error(tiny_config):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tests.prefect_stack import free_port

    url = f"http://127.0.0.1:{free_port()}/api"  # nothing listens there
    with (
        temporary_settings(updates={PREFECT_API_URL: url}),
        pytest.raises(dep.DeployError, match="cannot reach the Prefect server"),
    ):
        dep.setup()


def test_serve_passes_the_spec_to_flow_serve(tiny_config, monkeypatch):
    from prefect import Flow

    seen = {}
    monkeypatch.setattr(Flow, "serve", lambda self, **kw: seen.update(flow=self.name, **kw))
    dep.serve(tiny_config, cron="0 1 * * *")
    assert seen["flow"] == "fdd-distill" and seen["name"] == "nightly"
    assert seen["parameters"]["config"]["orchestration"]["shard_size"] == 7
    assert [s.cron for s in seen["schedules"]] == ["0 1 * * *"]


# --------------------------------------------------------------------------- fdd deploy / setup


def _parse(argv):
    from fdd import deploy_cmd

    parser = argparse.ArgumentParser(prog="fdd")
    deploy_cmd.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_cli_parses_deploy_and_setup():
    args = _parse(["deploy", "c.yaml", "--pool", "p", "--cron", "0 3 * * *", "--name", "n",
                   "--set", "a.b=1", "--job-var", 'env={"X": "1"}',
                   "--job-var", "image=x:1"])  # fmt: skip
    assert (args.config, args.pool, args.cron, args.name) == ("c.yaml", "p", "0 3 * * *", "n")
    assert args.overrides == ["a.b=1"]
    assert dict(args.job_vars) == {"env": {"X": "1"}, "image": "x:1"}
    assert callable(args.func) and args.fdd_command == "deploy"
    args = _parse(["setup", "--gpu-limit", "2"])
    assert (args.fdd_command, args.pool, args.gpu_limit) == ("setup", dep.DEFAULT_POOL, 2)


def test_cli_reports_config_errors_without_a_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("teacher:\n  n_samples: 0\n")
    args = _parse(["deploy", str(bad)])
    assert args.func(args) == 2
    err = capsys.readouterr().err
    assert "teacher.n_samples" in err and "Traceback" not in err


def test_cli_setup_without_a_server_exits_2(capsys):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    args = _parse(["setup"])
    with temporary_settings(updates={PREFECT_API_URL: None}):
        assert args.func(args) == 2
    assert "PREFECT_API_URL" in capsys.readouterr().err
