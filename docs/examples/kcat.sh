#!/usr/bin/env bash
# attnrec's topics from the shell with kcat (Debian/Ubuntu: apt-get install kcat; deploy/setup-system.sh
# installs it). Each sub-command runs one documented kcat line; copy the line you need.
#
#   docs/examples/kcat.sh produce < clicks.txt   # one click per line: <user_id>|<click event JSON>
#   docs/examples/kcat.sh consume                # the committed recommendations so far: <user_id> <JSON>
#   docs/examples/kcat.sh headers                # the same with each record's headers (attnrec-schema: recs/1)
#   docs/examples/kcat.sh dlq                    # the dead letters so far: <key> <envelope JSON>
#
# Settings (environment): BOOTSTRAP (default localhost:9092), CLICKS_TOPIC (clicks), RECS_TOPIC (recs),
# DLQ_TOPIC (clicks.dlq). The values' contracts: docs/schemas/ (README.md has the table).
#
# Produce. The key is the user id (everything before the first '|' of a line; so a user id
# must not contain '|'): one user's events land on one partition, in order. partitioner=murmur2_random
# is the Java client's (and kafka-python's, aiokafka's) partitioner: without it librdkafka hashes keys
# differently, and a user sent by kcat and by another client would be split over two partitions.
#
#   echo 'u123|{"event_id":"e-1","user_id":"u123","item_id":"sku-42","event_type":"view","ts":1764300000123}' \
#     | kcat -P -b localhost:9092 -t clicks -K '|' -X partitioner=murmur2_random
#
# Consume recommendations with isolation.level=read_committed: the worker writes them in Kafka
# transactions, and a read_uncommitted reader (kcat's default) also sees the attempts it aborted.
# -o beginning -e: from the oldest record to the end, then exit (drop -e to follow).
#
#   kcat -C -b localhost:9092 -t recs -X isolation.level=read_committed -f '%k %s\n' -o beginning -e
set -euo pipefail
BOOTSTRAP=${BOOTSTRAP:-localhost:9092}
CLICKS_TOPIC=${CLICKS_TOPIC:-clicks}
RECS_TOPIC=${RECS_TOPIC:-recs}
DLQ_TOPIC=${DLQ_TOPIC:-clicks.dlq}

case "${1:-}" in
  produce)
    exec kcat -P -b "$BOOTSTRAP" -t "$CLICKS_TOPIC" -K '|' -X partitioner=murmur2_random ;;
  consume)
    exec kcat -C -b "$BOOTSTRAP" -t "$RECS_TOPIC" -X isolation.level=read_committed -f '%k %s\n' -o beginning -e ;;
  headers)
    exec kcat -C -b "$BOOTSTRAP" -t "$RECS_TOPIC" -X isolation.level=read_committed -f '%k %h %s\n' -o beginning -e ;;
  dlq)
    exec kcat -C -b "$BOOTSTRAP" -t "$DLQ_TOPIC" -X isolation.level=read_committed -f '%k %s\n' -o beginning -e ;;
  *)
    sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'
    [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]] && exit 0
    exit 2 ;;
esac
