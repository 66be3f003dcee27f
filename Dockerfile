# The worker image: `python -m worker run`, configured by WORKER_* environment variables (and,
# optionally, an operator's TOML file named by WORKER_CONFIG). The settings' defaults ship in
# the package. Runs as uid 10001 and writes only to its state dir (and /tmp if mounted), so it
# works with a read-only root filesystem; Kubernetes probes /healthz and /readyz on port 9464.
# tests/deploy/test_dockerfile.py checks that this file agrees with the settings and the chart.
FROM python:3.11-slim AS build
# a C compiler for the learner's compiled modules (setup.py, mypyc); the final image has none
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY worker ./worker
# The same install as the tests' (Makefile: pip install '.[stream,dev]'), minus dev tools.
RUN python -m venv /opt/agent-hints \
    && /opt/agent-hints/bin/pip install --no-cache-dir '.[stream]'

FROM python:3.11-slim
RUN groupadd --system --gid 10001 worker \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin worker \
    && mkdir -p /var/lib/agent-hints \
    && chown 10001:10001 /var/lib/agent-hints
COPY --from=build /opt/agent-hints /opt/agent-hints
# No .pyc written at run time (pip compiled them at install), no output buffering, nothing
# under HOME: only the state dir needs to be writable.
ENV PATH=/opt/agent-hints/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/nonexistent \
    WORKER_STATE_DIR=/var/lib/agent-hints \
    WORKER_METRICS_PORT=9464
WORKDIR /var/lib/agent-hints
VOLUME /var/lib/agent-hints
USER 10001:10001
EXPOSE 9464
STOPSIGNAL SIGTERM
ENTRYPOINT ["python", "-m", "worker"]
CMD ["run"]
