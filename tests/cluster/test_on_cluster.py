"""Delivery, recovery, targeting and the shared Redis state, on a Redis Cluster.

The tests imported here are the same functions that run on a single Redis (their modules say
what each proves); this folder's conftest gives them the cluster stack. The tests below them
check what only a cluster has: sharded channels, keys that share a slot where one script or
command reads several."""
from __future__ import annotations

import asyncio

from shared import redisconn
from shared.metrics import _index, _key
from shared.presence import PRESENCE_BUCKETS, Presence

from ..shared.test_bus import (  # noqa: F401
    test_a_batch_of_offline_recipients_costs_no_publish,
    test_a_change_goes_to_the_workers_of_its_user,
    test_a_worker_counts_what_it_receives_and_not_its_heartbeat,
    test_each_worker_gets_only_the_items_of_the_users_it_holds,
    test_presence_finds_workers_and_writes_missing_leases_again,
    test_without_presence_everything_goes_on_the_shared_channel,
)
from ..shared.test_redisconn import test_a_burst_on_a_fresh_client_is_served  # noqa: F401
from ..shared.test_ratelimit import (  # noqa: F401
    limiter_of,
    test_the_redis_limiter_forgets_a_party_once_its_allowance_is_back,
    test_the_redis_limiter_is_shared_by_every_process,
)
from ..socket_server.test_badges import test_unread_count_stays_exact_under_concurrency  # noqa: F401
from ..socket_server.test_delivery import (  # noqa: F401
    test_polling_upgrades_through_the_load_balancer,
    test_ten_thousand_recipients_stored_and_delivered_once,
    test_two_tabs_on_two_workers_each_get_it_once_in_their_language,
)
from ..socket_server.test_recovery import (  # noqa: F401
    test_more_than_500_missed_asks_for_a_resync,
    test_reconnect_with_since_loses_nothing_and_repeats_nothing,
    test_since_replays_in_order_then_goes_live,
)
from ..socket_server.test_targeted import (  # noqa: F401
    test_a_socket_connecting_while_notifications_are_published_loses_nothing,
    test_a_targeted_emit_to_a_user_reaches_only_the_worker_holding_it,
    test_a_worker_gets_only_the_items_of_the_users_it_holds,
    test_read_state_changes_go_to_the_workers_of_their_user,
)


def test_the_stack_runs_on_a_cluster(runtime, stack):
    assert redisconn.is_cluster(runtime.redis)
    assert stack.redis_url.startswith("redis+cluster://") and len(stack.redis_cluster.masters()) == 3


async def test_workers_listen_on_sharded_channels_spread_over_the_masters(runtime, stack, settings):
    """Each worker's bus channel is a sharded channel, heard on the master that owns its slot;
    nothing uses cluster-wide (plain) pub/sub, which every node would have to copy."""
    channels = [f"{settings.channel_prefix}:bus:{w}" for w in stack.worker_ids]
    channels += [f"{settings.channel_prefix}:events", f"{settings.channel_prefix}:socketio"]
    for channel in channels:
        node = runtime.redis.get_node_from_key(channel)
        sharded = await runtime.redis.execute_command("PUBSUB", "SHARDNUMSUB", channel, target_nodes=node)
        plain = await runtime.redis.execute_command("PUBSUB", "NUMSUB", channel, target_nodes=node)
        assert int(sharded[1]) >= 1 and int(plain[1]) == 0, (channel, sharded, plain)
    # Every worker listens to the shared channels: all of them, on their shard.
    shared = f"{settings.channel_prefix}:events"
    node = runtime.redis.get_node_from_key(shared)
    assert int((await runtime.redis.execute_command("PUBSUB", "SHARDNUMSUB", shared, target_nodes=node))[1]) \
        == len(stack.worker_ids)


async def test_presence_keys_of_one_bucket_share_a_slot_and_buckets_spread_over_every_master(runtime, stack):
    presence = Presence(redis=runtime.redis, prefix="slot-test")
    users = [f"user-{i}" for i in range(5000)]
    slots_by_bucket: dict[str, set[int]] = {}
    for user in users:
        key = presence.key(user)
        slots_by_bucket.setdefault(key.partition("}")[0], set()).add(redisconn.slot(key))
    assert len(slots_by_bucket) == PRESENCE_BUCKETS
    assert all(len(slots) == 1 for slots in slots_by_bucket.values())
    masters = stack.redis_cluster.masters()
    owners = {port for slots in slots_by_bucket.values() for port, ranges in masters.items()
              for lo, hi in ranges if lo <= next(iter(slots)) <= hi}
    assert owners == set(masters)
    # A lookup over every bucket: one script per bucket, concurrently, all answered.
    await asyncio.gather(*(presence.refresh([(u, f"w{i % 3}.s{i}")]) for i, u in enumerate(users[:300])))
    found = await presence.workers(users)
    assert found == {u: {f"w{i % 3}"} for i, u in enumerate(users[:300])}


def test_metrics_keys_share_one_slot():
    keys = [_index("notihub"), *(_key("notihub", p) for p in ("w0", "w1", "i0", "api"))]
    assert len({redisconn.slot(k) for k in keys}) == 1
