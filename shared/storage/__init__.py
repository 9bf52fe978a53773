"""MongoDB persistence: one module per collection."""

# The shard key of each collection, for a sharded cluster (see storage/notifications.py): every
# unique index of a collection starts with its key, and every query of it names the key's first
# field, so a router sends each one to the shards that own it.
SHARD_KEYS: dict[str, dict[str, int | str]] = {
    "notifications": {"recipient": 1, "_id": 1},
    "notification_sources": {"source": 1, "recipient": 1},
    "notification_tombstones": {"_id": "hashed"},
    "inboxes": {"_id": "hashed"},
    "topic_subscribers": {"topic": 1, "user": 1},
    "idempotency_keys": {"_id": "hashed"},
}
