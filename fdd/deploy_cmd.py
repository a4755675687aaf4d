"""`fdd deploy` and `fdd setup`: put FDD runs on a Prefect server.

    fdd setup [--pool fdd-process] [--gpu-limit 1]
        once per server: the process work pool, and the concurrency limit on tasks tagged
        "gpu" (default 1, so two rounds never fight over one GPU)
    fdd deploy CONFIG [--pool NAME] [--cron EXPR] [--name NAME] [--set KEY=VALUE ...]
        register the FDD flow with CONFIG as its parameters (validated first)
    fdd deploy CONFIG --serve
        serve the deployment from this process instead (no work pool, no worker)

Both talk to the server in PREFECT_API_URL. The CLI wires them in with `add_parser`
(registers both subcommands, each with `func=run`) and calls `args.func(args)`.
"""

from __future__ import annotations

import argparse
import json
import sys

COMMANDS = ("deploy", "setup")


def _job_var(item: str) -> tuple[str, object]:
    if "=" not in item:
        raise argparse.ArgumentTypeError(f"--job-var expects KEY=VALUE, got {item!r}")
    key, raw = item.split("=", 1)
    try:  # JSON values allow numbers, lists and mappings (e.g. env={"A": "1"})
        return key, json.loads(raw)
    except json.JSONDecodeError:
        return key, raw


def add_parser(subparsers) -> None:
    """Add the `deploy` and `setup` subcommands to an argparse subparsers object."""
    from deployments.deploy import DEFAULT_GPU_LIMIT, DEFAULT_POOL

    dep = subparsers.add_parser(
        "deploy",
        help="register the FDD flow with a Prefect server (PREFECT_API_URL)",
        description="Register the FDD flow with CONFIG as its parameters on the Prefect "
        "server in PREFECT_API_URL. Run `fdd setup` once first.",
    )
    dep.add_argument("config", help="run config YAML (validated before anything is sent)")
    dep.add_argument("--pool", default=DEFAULT_POOL, help=f"work pool (default {DEFAULT_POOL})")
    dep.add_argument("--name", help="deployment name (default: the config file's stem)")
    dep.add_argument("--cron", help="cron schedule, e.g. '0 3 * * *' (default: none)")
    dep.add_argument("--timezone", help="IANA timezone for --cron, e.g. Europe/Paris")
    dep.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config field, e.g. --set teacher.n_samples=8 (repeatable)",
    )  # fmt: skip
    dep.add_argument(
        "--image",
        help="prebuilt image with fdd installed, for docker/kubernetes pools (no build/push)",
    )
    dep.add_argument(
        "--source",
        help="git URL or folder the worker pulls the code from (default: this checkout)",
    )
    dep.add_argument(
        "--job-var", dest="job_vars", action="append", default=[], type=_job_var,
        metavar="KEY=VALUE", help="work pool job variable (JSON values allowed; repeatable)",
    )  # fmt: skip
    dep.add_argument("--tag", dest="tags", action="append", default=[], help="extra tag")
    dep.add_argument(
        "--serve", action="store_true",
        help="serve from this process instead of registering for a work pool (blocks)",
    )  # fmt: skip
    dep.set_defaults(fdd_command="deploy", func=run)

    st = subparsers.add_parser(
        "setup",
        help="create the work pool and the gpu concurrency limit on the Prefect server",
        description="Prepare the Prefect server in PREFECT_API_URL: create the process work "
        "pool if missing and limit tasks tagged 'gpu' to --gpu-limit at a time.",
    )
    st.add_argument("--pool", default=DEFAULT_POOL, help=f"work pool (default {DEFAULT_POOL})")
    st.add_argument(
        "--gpu-limit", type=int, default=DEFAULT_GPU_LIMIT,
        help=f"tasks tagged 'gpu' running at once (default {DEFAULT_GPU_LIMIT}: one per GPU)",
    )  # fmt: skip
    st.set_defaults(fdd_command="setup", func=run)


def run(args: argparse.Namespace) -> int:
    """Execute `deploy` or `setup` from parsed arguments; returns the exit code."""
    from deployments import deploy as dep

    command = getattr(args, "fdd_command", None) or getattr(args, "command", None)
    try:
        if command == "setup":
            for line in dep.setup(pool=args.pool, gpu_limit=args.gpu_limit):
                print(line)
            return 0
        if command != "deploy":
            raise dep.DeployError(f"unknown command {command!r}; expected one of {COMMANDS}")
        options = {
            "name": args.name,
            "cron": args.cron,
            "timezone": args.timezone,
            "overrides": args.overrides,
            "tags": args.tags,
        }
        if args.serve:
            dep.serve(args.config, **options)
            return 0
        deployment_id = dep.deploy(
            args.config,
            args.pool,
            source=args.source,
            image=args.image,
            job_variables=dict(args.job_vars),
            **options,
        )
    except dep.DeployError as exc:
        print(f"fdd {command}: {exc}", file=sys.stderr)
        return 2
    ref = f"{dep.DISTILL_FLOW_NAME}/{args.name or dep.deployment_name(args.config)}"
    print(f"deployment {ref} registered (id {deployment_id}) on work pool {args.pool!r}")
    print(f"  start a worker: prefect worker start --pool {args.pool}")
    print(f"  run it now:     prefect deployment run '{ref}'")
    return 0
