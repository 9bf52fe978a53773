#!/bin/bash
# One-shot creation of the Kafka topics notihub uses (run by the kafka-init service):
#   bash /notihub/kafka-init.sh        # brokers from NOTIHUB_KAFKA_BOOTSTRAP (default kafka:9092)
# The broker never creates a topic on first use, so these must exist before the API produces
# to notihub.events or an ingest worker consumes it.
# Idempotent: an existing topic is left as it is. Exits non-zero when the brokers do not answer
# in time or a topic has fewer partitions than listed here.
set -euo pipefail

BOOTSTRAP="${NOTIHUB_KAFKA_BOOTSTRAP:-kafka:9092}"
REPLICATION_FACTOR="${NOTIHUB_KAFKA_REPLICATION_FACTOR:-1}"
# topic:partitions. Keep in step with shared/kafka.py (names) and devstack/kafka.py (counts).
TOPICS=("notihub.events:3" "notihub.events.dlq:1")
ATTEMPTS=30
TOPICS_SH=/opt/kafka/bin/kafka-topics.sh
# The tools are JVMs of their own: a small heap is plenty.
export KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xmx128m}"

log() {
  echo "kafka-init: $*" >&2
}

# Run "$@" until it succeeds, every 2 s, at most ATTEMPTS times.
retry() {
  local attempt
  for ((attempt = 1; attempt <= ATTEMPTS; attempt++)); do
    if "$@"; then
      return 0
    fi
    log "attempt ${attempt}/${ATTEMPTS} failed; retrying in 2s"
    sleep 2
  done
  log "FAILED: $*"
  return 1
}

for spec in "${TOPICS[@]}"; do
  topic="${spec%%:*}"
  partitions="${spec##*:}"
  retry "$TOPICS_SH" --bootstrap-server "$BOOTSTRAP" --create --if-not-exists \
    --topic "$topic" --partitions "$partitions" --replication-factor "$REPLICATION_FACTOR"
  # One line per partition ("Partition: <n>"); the summary line has "PartitionCount:".
  description="$(retry "$TOPICS_SH" --bootstrap-server "$BOOTSTRAP" --describe --topic "$topic")"
  have="$(grep -c "Partition: " <<<"$description" || true)"
  if ((have < partitions)); then
    log "FAILED: ${topic} has ${have} partitions, needs ${partitions}" \
      "(kafka-topics.sh --alter --topic ${topic} --partitions ${partitions})"
    exit 1
  fi
  log "${topic}: ${have} partitions"
done
log "topics ready on ${BOOTSTRAP}"
