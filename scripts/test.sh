#!/usr/bin/env bash
# The test command of the README: every test of the crate (unit tests and the one
# integration binary), on a fresh machine as on a developer's.
#
# The Kafka tests use a real broker: EXFLOW_TEST_KAFKA_BROKERS when set (for example the
# Apache Kafka of docker/compose.yaml, localhost:29092); otherwise this script installs the
# tansu broker when it is missing and starts one on loopback for the run. The broker
# outage tests always start and stop tansu themselves.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

scripts/kafka.sh install
started=""
if [ -z "${EXFLOW_TEST_KAFKA_BROKERS:-}" ]; then
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  scripts/kafka.sh start "$port"
  started="$port"
  export EXFLOW_TEST_KAFKA_BROKERS="127.0.0.1:$port"
  trap 'scripts/kafka.sh stop "$started"' EXIT
fi
cargo test --all-targets "$@"
