"""Prefect deployments of the FDD flow: `deploy.py` (the code behind `fdd deploy` and
`fdd setup`), `prefect.yaml` (declarative deployments per work pool kind) and the
Kubernetes GPU job template for `prefect work-pool create --base-job-template`."""
