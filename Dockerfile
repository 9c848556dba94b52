# syntax=docker/dockerfile:1
# Every ShopBotly image, from the repository root. The target names the deployable; PACKAGES names the
# workspace packages it installs (docker-compose.yml and docs/deploy.md list the pairs):
#   docker build --target ingest --build-arg PACKAGES=shopbotly-ingest -t shopbotly/ingest .
#   docker build --target mapper --build-arg PACKAGES="shopbotly-mapper shopbotly-cli" -t shopbotly/mapper .
#   docker build --target console --build-arg PACKAGES="shopbotly-console shopbotly-cli shopbotly-mapper" -t shopbotly/console .
# `build` resolves the locked dependencies with uv into /app/.venv (no compilers or uv in the final image);
# `runtime` is python:3.11-slim with that venv, running as an unprivileged user; the targets below it set
# only what differs between deployables: port, settings and console script.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.9

FROM ${UV_IMAGE} AS uv

FROM ${PYTHON_IMAGE} AS build
# strip, for the wheels' extension modules: most ship their debug symbols (uvloop's loop.so is 13.6 MB, 1.6 MB
# stripped; 40 MB of the mapper's venv in all). Only this stage has it, so no binutils reach the final image.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends binutils \
 && rm -rf /var/lib/apt/lists/*
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src
# The third-party dependencies of every member first, from the lock file alone: one layer that every
# image shares and that a source change does not invalidate.
# Behind a TLS-inspecting proxy, pass the host's CA bundle as the optional build secret `ca-bundle`
# (`--secret id=ca-bundle,src=/etc/ssl/certs/ca-certificates.crt`; make images does): uv trusts it for
# the downloads, and a secret is never stored in a layer.
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=secret,id=ca-bundle,target=/run/secrets/ca-bundle \
    if [ -s /run/secrets/ca-bundle ]; then export SSL_CERT_FILE=/run/secrets/ca-bundle; fi; \
    uv sync --frozen --no-dev --all-packages --no-install-workspace
COPY libs libs
COPY services services
COPY tools tools
# Then exactly what PACKAGES need, non-editable: `uv sync` is exact, so it also removes the dependencies
# of the other members.
ARG PACKAGES
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=secret,id=ca-bundle,target=/run/secrets/ca-bundle \
    if [ -s /run/secrets/ca-bundle ]; then export SSL_CERT_FILE=/run/secrets/ca-bundle; fi; \
    if [ -z "${PACKAGES}" ]; then \
      echo "PACKAGES is empty: build with --target <deployable> --build-arg PACKAGES=<its workspace packages>, as docker-compose.yml does" >&2; \
      exit 1; \
    fi; \
    set --; \
    for package in ${PACKAGES}; do set -- "$@" --package "${package}"; done; \
    uv sync --frozen --no-dev --no-editable "$@" \
 && find /app/.venv -type f \( -name '*.so' -o -name '*.so.*' \) -exec strip --strip-unneeded {} +

FROM ${PYTHON_IMAGE} AS runtime
ARG UID=10001
RUN groupadd --system --gid "${UID}" shopbotly \
 && useradd --system --uid "${UID}" --gid "${UID}" --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin shopbotly \
 && install -d -o "${UID}" -g "${UID}" -m 0750 /var/lib/shopbotly
COPY --from=build /app/.venv /app/.venv
# HOME=/tmp: the root filesystem is read-only at run time; /tmp is the one writable scratch mount.
ENV PATH=/app/.venv/bin:$PATH \
    HOME=/tmp \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /app
USER ${UID}:${UID}
# Liveness: /healthz fails when the service stops making progress. Kubernetes ignores HEALTHCHECK
# (it has its own probes); compose gates start-up on /readyz instead. No curl in slim: stdlib does it.
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + (os.environ.get('SHOPBOTLY_PORT') or os.environ['SHOPBOTLY_EMULATOR_PORT']) + '/healthz', timeout=2)"]

# The services read SHOPBOTLY_* settings and the tenants file.
FROM runtime AS service
ENV SHOPBOTLY_HOST=0.0.0.0 \
    SHOPBOTLY_CONFIG=/etc/shopbotly/shopbotly.yaml

FROM service AS ingest
ENV SHOPBOTLY_PORT=8080
EXPOSE 8080
ENTRYPOINT ["shopbotly-ingest"]

# /var/lib/shopbotly: the order table (SQLite), a volume at run time.
FROM service AS order-reader
ENV SHOPBOTLY_PORT=8081 \
    SHOPBOTLY_DATA_DIR=/var/lib/shopbotly
EXPOSE 8081
ENTRYPOINT ["shopbotly-order-reader"]

# Also carries the operator CLI (`shopbotly`: topics, replay, redrive), which needs the mapper's rules for
# dry runs. /var/lib/shopbotly: faust's local data.
FROM service AS mapper
ENV SHOPBOTLY_PORT=9101 \
    SHOPBOTLY_DATA_DIR=/var/lib/shopbotly
EXPOSE 9101
ENTRYPOINT ["shopbotly-mapper"]

FROM service AS crm-writer
ENV SHOPBOTLY_PORT=9102
EXPOSE 9102
ENTRYPOINT ["shopbotly-crm-writer"]

# The operator console (docs/console.md). Its read model is rebuilt from the topics at every start and kept in
# memory: no data dir. It carries the CLI (its redrive) and the mapper (the mapping playground) as libraries.
FROM service AS console
ENV SHOPBOTLY_PORT=8082
EXPOSE 8082
ENTRYPOINT ["shopbotly-console"]

# HubSpot/Salesforce/generic CRM stand-in for compose and demos (not for production). Its settings are
# SHOPBOTLY_EMULATOR_*; SHOPBOTLY_DATA_DIR would move its store from memory to a file, so it is not set.
FROM runtime AS crm-emulator
ENV SHOPBOTLY_EMULATOR_HOST=0.0.0.0 \
    SHOPBOTLY_EMULATOR_PORT=8090
EXPOSE 8090
ENTRYPOINT ["shopbotly-crm-emulator"]
