# vip-sidecar container image.
#
#   docker build -t vip-sidecar .                      # official python:3.12-slim base
#   buildah bud --build-arg BASE_IMAGE=<local> .      # any Debian-like base with python3 >= 3.11
#                                                      # and its venv module (CI uses a debootstrap one)
#
# Stage 1 builds wheels of the project and every dependency; stage 2 installs only those
# wheels into a venv (no compiler, no pip cache, no source tree) and runs as UID 10001.
#
# Capabilities: CARP needs CAP_NET_RAW (raw IP protocol 112 socket) and the alias
# provider CAP_NET_ADMIN. The Helm chart runs the default `vip-sidecar` entry point as
# UID 0 with only those two capabilities, no privilege escalation and a read-only root.
# For clusters that insist on a non-root UID, /opt/vip-sidecar/bin/python3-netcaps is a
# copy of the interpreter carrying the file capabilities cap_net_admin,cap_net_raw+ep:
# a non-root process started from it gets exactly those two capabilities, provided the
# container's bounding set has them and privilege escalation (no_new_privs) is allowed.
# Nothing else in the image has file capabilities. See helm/vip-sidecar/README.md.

ARG BASE_IMAGE=python:3.12-slim

# ------------------------------------------------------------------ build the wheels
FROM ${BASE_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
# .dockerignore lets through only what a wheel needs (pyproject, packages, README)
COPY . .
RUN python3 -m venv /opt/build \
    && /opt/build/bin/python -m pip wheel --no-cache-dir --wheel-dir /wheels .

# ------------------------------------------------------------------ runtime image
FROM ${BASE_IMAGE}

ARG VIP_UID=10001

LABEL org.opencontainers.image.title="vip-sidecar" \
      org.opencontainers.image.description="UCARP-compatible (CARP, IP protocol 112) floating-IP daemon with alias, AWS, Kubernetes and script providers" \
      org.opencontainers.image.licenses="BSD-2-Clause"

# JSON logs by default in containers (one object per line for log shippers)
ENV PATH="/opt/vip-sidecar/bin:${PATH}" \
    VIP_SIDECAR_LOG_FORMAT=json \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The wheels are bind-mounted from the builder stage, so they never become a layer.
# pip compiles the bytecode at install time (the chart mounts the root read-only),
# then pip itself is removed from the venv.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    python3 -m venv /opt/vip-sidecar \
    && /opt/vip-sidecar/bin/python -m pip install --no-cache-dir --no-index /wheels/*.whl \
    && /opt/vip-sidecar/bin/python -m pip uninstall --yes pip setuptools \
    && cp "$(readlink -f /opt/vip-sidecar/bin/python3)" /opt/vip-sidecar/bin/python3-netcaps \
    && /opt/vip-sidecar/bin/python3 -c "import os; os.setxattr('/opt/vip-sidecar/bin/python3-netcaps', 'security.capability', bytes.fromhex('0100000200300000000000000000000000000000'))" \
    && groupadd --system --gid "${VIP_UID}" vip \
    && useradd --system --uid "${VIP_UID}" --gid "${VIP_UID}" --no-create-home \
               --home-dir /nonexistent --shell /usr/sbin/nologin vip \
    && vip-sidecar --version

USER ${VIP_UID}:${VIP_UID}
WORKDIR /
ENTRYPOINT ["vip-sidecar"]
CMD ["run"]
