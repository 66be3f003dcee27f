#!/usr/bin/env bash
# A real Apache Kafka broker (single node, KRaft, 127.0.0.1 only) for development and CI.
#
#   scripts/kafka.sh install   fetch the broker jars from Maven Central into .cache/kafka/<version>
#   scripts/kafka.sh up        start a broker; the last line printed is KAFKA_BOOTSTRAP=127.0.0.1:<port>
#   scripts/kafka.sh down      stop it (SIGTERM, SIGKILL after 30s) and delete its data dir
#   scripts/kafka.sh status    is it answering?
#
# Environment: KAFKA_VERSION (default: kafka.version in kafka/pom.xml), KAFKA_PORT=N (the
# PLAINTEXT port for `up`; default a free one), KAFKA_SASL=1 (add a
# SASL_PLAINTEXT listener with SCRAM-SHA-256/512 user worker/worker-secret), KAFKA_JVM_OPTS.
# The logic lives in devtools/kafka_broker.py, which the pytest fixture uses too; this wrapper only
# picks a Python (the project venv if present, it needs nothing but the standard library).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -x .venv/bin/python ]]; then
    py=.venv/bin/python
else
    py=$(command -v python3.11 || command -v python3)
fi
exec "$py" devtools/kafka_broker.py "$@"
