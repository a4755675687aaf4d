"""Names shared by the tasks and the deployments, kept in one place so they cannot drift.

A plain module without imports: `deployments.deploy` reads it without loading Prefect.
"""

# Tasks that hold a GPU carry this tag; the deployments put a concurrency limit on it.
GPU_TAG = "gpu"
