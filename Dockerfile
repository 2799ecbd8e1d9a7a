# syntax=docker/dockerfile:1
# The expertbot image: every worker, beat and the CLI run from it (see docker-compose.yml).
#
#   docker build -t expertbot .                                   # CPU PyTorch (the default)
#   docker build -t expertbot-gpu --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu130 .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# PyTorch first, from PyTorch's own index: the CPU build by default (~200 MB, not several GB of CUDA packages).
# `pip install .` below then finds torch==2.13.0 satisfied and keeps this build.
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"

WORKDIR /app

# Dependencies in their own layer, rebuilt only when pyproject.toml changes: install the project with empty
# packages, then remove just the project, keeping what it pulled in.
COPY pyproject.toml README* ./
RUN mkdir -p agent bot workers \
 && touch agent/__init__.py bot/__init__.py workers/__init__.py \
 && pip install . \
 && pip uninstall --yes expertbot \
 && rm -rf agent bot workers build ./*.egg-info

COPY agent ./agent
COPY bot ./bot
COPY workers ./workers
RUN pip install --no-deps . && rm -rf build ./*.egg-info

# Run unprivileged; /data holds local state (EXPERTBOT_DATA_DIR) such as celery beat's schedule.
RUN useradd --create-home --uid 10001 expertbot \
 && mkdir -p /data \
 && chown expertbot:expertbot /data
ENV EXPERTBOT_DATA_DIR=/data
USER expertbot

CMD ["expertbot", "--help"]
