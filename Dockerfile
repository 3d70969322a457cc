# The Ledgerhook image: `ledgerhook serve` by default; the same image runs `ledgerhook worker` and
# `ledgerhook migrate` (helm/ledgerhook). Building and pushing it: helm/ledgerhook/README.md.
#
# Both stages use the same base, since the virtual environment built in the first one is copied into
# the second. The base is pinned by tag; to pin it by digest as well, look the digest up once with
#   docker buildx imagetools inspect python:3.12-slim-bookworm
# and build with --build-arg PYTHON_IMAGE=python:3.12-slim-bookworm@sha256:<digest> (or write it here).
ARG PYTHON_IMAGE=python:3.12-slim-bookworm
# The version the labels announce: the package's (pyproject.toml) unless the build says otherwise.
ARG VERSION=0.1.0

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway/ gateway/
COPY fanout/ fanout/
COPY provider_auth/ provider_auth/
# The wheel, built as tests/test_wheel_install.py builds it, then a virtual environment holding it
# and its runtime dependencies only (no dev extra; the `tracing` extra, so that OTEL_* can turn
# tracing on), byte-compiled by pip for the runtime's Python.
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
    && python -m venv /opt/ledgerhook \
    && /opt/ledgerhook/bin/pip install --no-cache-dir "$(ls /wheels/ledgerhook-*.whl)[tracing]"

FROM ${PYTHON_IMAGE} AS runtime
ARG VERSION
LABEL org.opencontainers.image.title="Ledgerhook" \
      org.opencontainers.image.description="Webhook ingestion and routing gateway for accounting integrations" \
      org.opencontainers.image.source="https://github.com/ledgerhook/ledgerhook" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
# The chart's user and group (podSecurityContext runAsUser/runAsGroup). USER is numeric so that
# Kubernetes can check runAsNonRoot against the image.
RUN groupadd --gid 10001 ledgerhook \
    && useradd --uid 10001 --gid 10001 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin ledgerhook
COPY --from=build /opt/ledgerhook /opt/ledgerhook
# The root filesystem is read-only in the chart and /tmp its only writable volume: no bytecode is
# written at run time, and whatever wants a home or a temporary directory gets /tmp.
ENV PATH="/opt/ledgerhook/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp
USER 10001:10001
# 8000: the gateway (`serve`); 9000: the worker's /livez, /readyz and /metrics (`worker`).
EXPOSE 8000 9000
# No HEALTHCHECK: Kubernetes ignores it and probes /livez and /readyz itself (helm/ledgerhook).
# No init either: `serve` and `worker` run as PID 1 and handle SIGTERM themselves (drain, then exit).
ENTRYPOINT ["ledgerhook"]
CMD ["serve"]
