"""Register the FDD flow with a Prefect server, or serve it from this process.

A deployment is the parent flow (`flows/distill.py:fdd_distill`) plus one run config: the
YAML file is validated here (a typo fails before anything reaches the server) and its full
settings, defaults included, become the deployment's `config` parameter. The UI shows them,
a scheduled run uses exactly them, and a run can still override any field.

Where the code comes from:
- process pools (default): `from_source(<this checkout>)`, so the worker runs the flow in
  this folder (relative paths in the config, like `storage.root: runs`, land here). Pass
  `source="https://github.com/org/fdd.git"` to have each run clone the repository instead.
- docker / kubernetes pools: give `image=` (a prebuilt image with fdd installed, see the
  Dockerfile); the entrypoint is then the module path `flows.distill.fdd_distill`, which the
  image imports. Nothing is built or pushed here.

`setup()` prepares a server once: the process work pool, and the `gpu` tag concurrency limit
that makes tasks tagged "gpu" wait for a free slot (two rounds never share one GPU).

    fdd deploy configs/cluster.yaml --pool fdd-process --cron "0 3 * * *"   # the command line
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

from fdd_core.config import ConfigError, RunConfig, load_config
from fdd_core.tags import GPU_TAG

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DISTILL_ENTRYPOINT = "flows/distill.py:fdd_distill"
DEFAULT_POOL = "fdd-process"
DEFAULT_GPU_LIMIT = 1
DEFAULT_TAGS = ("fdd",)
DISTILL_FLOW_NAME = "fdd-distill"


class DeployError(RuntimeError):
    """A deployment that cannot be made as asked; the message says what to change."""


@dataclass(frozen=True)
class DeploySpec:
    """Everything that defines one deployment, checked before any server is contacted."""

    name: str
    config: RunConfig
    config_path: str
    work_pool: str = DEFAULT_POOL
    entrypoint: str = DISTILL_ENTRYPOINT
    cron: str | None = None
    timezone: str | None = None
    source: str | None = None
    image: str | None = None
    job_variables: dict[str, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = DEFAULT_TAGS

    @property
    def parameters(self) -> dict[str, Any]:
        return {"config": self.config.model_dump(mode="json")}

    @property
    def module_entrypoint(self) -> str:
        """`flows/distill.py:fdd_distill` -> `flows.distill.fdd_distill` (for images)."""
        path, _, func = self.entrypoint.partition(":")
        return ".".join(Path(path).with_suffix("").parts) + "." + func


def deployment_name(config_path: str | Path) -> str:
    """Default deployment name: the config file's stem (configs/cluster.yaml -> cluster)."""
    return Path(config_path).stem


def validate_cron(expr: str) -> str:
    """The cron string, or a DeployError naming what is wrong with it."""
    from prefect.client.schemas.schedules import CronSchedule

    try:
        CronSchedule(cron=expr)
    except ValueError as exc:
        raise DeployError(
            f"--cron {expr!r} is not a valid cron expression (five fields: minute hour "
            f"day-of-month month day-of-week, e.g. '0 3 * * *'): {exc}"
        ) from None
    return expr


def make_spec(
    config_path: str | Path,
    work_pool: str = DEFAULT_POOL,
    *,
    name: str | None = None,
    cron: str | None = None,
    timezone: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    entrypoint: str = DISTILL_ENTRYPOINT,
    source: str | None = None,
    image: str | None = None,
    job_variables: dict[str, Any] | None = None,
    tags: tuple[str, ...] | list[str] = (),
) -> DeploySpec:
    """Validate the config and the options into a DeploySpec (no server needed)."""
    try:
        cfg = load_config(config_path, overrides)
    except ConfigError as exc:
        raise DeployError(str(exc)) from None
    if ":" not in entrypoint or not entrypoint.split(":", 1)[0].endswith(".py"):
        raise DeployError(
            f"entrypoint must look like path/to/file.py:flow_function, got {entrypoint!r}"
        )
    if source and image:
        raise DeployError("give either source (code pulled at run time) or image, not both")
    return DeploySpec(
        name=name or deployment_name(config_path),
        config=cfg,
        config_path=str(config_path),
        work_pool=work_pool,
        entrypoint=entrypoint,
        cron=validate_cron(cron) if cron else None,
        timezone=timezone,
        source=source,
        image=image,
        job_variables=dict(job_variables or {}),
        tags=tuple(dict.fromkeys([*DEFAULT_TAGS, *tags])),
    )


def _schedules(spec: DeploySpec) -> list | None:
    if not spec.cron:
        return None
    from prefect.schedules import Cron

    return [Cron(spec.cron, timezone=spec.timezone)] if spec.timezone else [Cron(spec.cron)]


def build_deployment(spec: DeploySpec):
    """The Prefect `RunnerDeployment` for a spec. Loads the flow; talks to no server."""
    from prefect import Flow
    from prefect.deployments.runner import EntrypointType

    common = {
        "name": spec.name,
        "parameters": spec.parameters,
        "schedules": _schedules(spec),
        "work_pool_name": spec.work_pool,
        "job_variables": spec.job_variables or None,
        "tags": list(spec.tags),
        "version": spec.config.config_hash(),
        "description": f"FDD run of {spec.config_path} (config {spec.config.config_hash()})",
    }
    if spec.image:
        # The image has fdd installed: the worker imports the flow by module path and pulls
        # no code. Loaded from a file here, the flow's module has another name, so the
        # entrypoint is set to the one the image will import.
        from prefect.flows import load_flow_from_entrypoint

        flow = load_flow_from_entrypoint(str(PROJECT_ROOT / spec.entrypoint))
        deployment = flow.to_deployment(entrypoint_type=EntrypointType.MODULE_PATH, **common)
        deployment.entrypoint = spec.module_entrypoint
        return deployment
    flow = Flow.from_source(spec.source or str(PROJECT_ROOT), spec.entrypoint)
    return flow.to_deployment(**common)


def _require_server() -> str:
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        raise DeployError(
            "PREFECT_API_URL is not set, so there is no server to register with. Start one "
            "(docker compose up -d, or `prefect server start`) and export "
            "PREFECT_API_URL=http://127.0.0.1:4200/api"
        )
    return url


@contextlib.contextmanager
def _server_errors(url: str):
    """Turn "cannot reach the server" into a DeployError instead of a traceback."""
    import httpx

    try:
        yield
    except (httpx.TransportError, OSError) as exc:
        raise DeployError(
            f"cannot reach the Prefect server at {url} ({exc}); is it running, and is "
            "PREFECT_API_URL right?"
        ) from None


def deploy(
    config_path: str | Path,
    work_pool: str = DEFAULT_POOL,
    *,
    cron: str | None = None,
    name: str | None = None,
    **options: Any,
) -> UUID:
    """Register (create or update) the deployment on the server in PREFECT_API_URL.

    `options` are those of `make_spec` (overrides, timezone, entrypoint, source, image,
    job_variables, tags). Returns the deployment id.
    """
    from prefect.deployments.runner import deploy as prefect_deploy

    spec = make_spec(config_path, work_pool, cron=cron, name=name, **options)
    url = _require_server()
    deployment = build_deployment(spec)
    try:
        with _server_errors(url):
            ids = prefect_deploy(
                deployment,
                work_pool_name=spec.work_pool,
                image=spec.image,
                build=False,
                push=False,
                print_next_steps_message=False,
                ignore_warnings=True,
            )
    except ValueError as exc:  # e.g. "Could not find work pool ..."
        raise DeployError(f"{exc} (run `fdd setup --pool {spec.work_pool}` first)") from None
    return ids[0]


def serve(
    config_path: str | Path,
    *,
    cron: str | None = None,
    name: str | None = None,
    **options: Any,
) -> None:
    """Serve the deployment from this process (no work pool or worker); blocks until Ctrl-C."""
    from prefect.flows import load_flow_from_entrypoint

    spec = make_spec(config_path, cron=cron, name=name, **options)
    flow = load_flow_from_entrypoint(str(PROJECT_ROOT / spec.entrypoint))
    flow.serve(
        name=spec.name,
        parameters=spec.parameters,
        schedules=_schedules(spec),
        tags=list(spec.tags),
        version=spec.config.config_hash(),
    )


async def asetup(pool: str = DEFAULT_POOL, gpu_limit: int = DEFAULT_GPU_LIMIT) -> list[str]:
    """Create the process work pool if missing and set the `gpu` tag concurrency limit.

    Idempotent: an existing pool is left as it is, the limit is created or updated.
    Returns one line per action, for the CLI to print.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound
    from prefect.workers.utilities import get_default_base_job_template_for_infrastructure_type

    if gpu_limit < 1:
        raise DeployError(f"--gpu-limit must be at least 1, got {gpu_limit}")
    done = []
    async with get_client() as client:
        try:
            existing = await client.read_work_pool(pool)
            done.append(f"work pool {pool!r} already exists (type {existing.type})")
        except ObjectNotFound:
            template = await get_default_base_job_template_for_infrastructure_type("process")
            await client.create_work_pool(
                WorkPoolCreate(name=pool, type="process", base_job_template=template or {})
            )
            done.append(f"created process work pool {pool!r}")
        await client.create_concurrency_limit(tag=GPU_TAG, concurrency_limit=gpu_limit)
        done.append(
            f"tasks tagged {GPU_TAG!r} limited to {gpu_limit} at a time (concurrency limit)"
        )
    return done


def setup(pool: str = DEFAULT_POOL, gpu_limit: int = DEFAULT_GPU_LIMIT) -> list[str]:
    """Synchronous `asetup` against the server in PREFECT_API_URL."""
    url = _require_server()
    with _server_errors(url):
        return asyncio.run(asetup(pool, gpu_limit))
