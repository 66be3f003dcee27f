# The worker image: `python -m worker run`, configured by /app/config/worker.toml and WORKER_* env.
FROM python:3.11-slim AS build
WORKDIR /app
COPY pyproject.toml README.md ./
COPY worker ./worker
RUN pip install --no-cache-dir --prefix=/install ".[stream]"

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home /app worker && mkdir -p /var/lib/agent-hints \
    && chown worker /var/lib/agent-hints
COPY --from=build /install /usr/local
COPY config /app/config
WORKDIR /app
USER worker
ENV WORKER_STATE_DIR=/var/lib/agent-hints WORKER_METRICS_PORT=9464
EXPOSE 9464
STOPSIGNAL SIGTERM
ENTRYPOINT ["python", "-m", "worker"]
CMD ["run"]
