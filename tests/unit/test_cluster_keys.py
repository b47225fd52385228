"""The Redis Cluster layout without a cluster: slots as Redis computes them, the per-slot tags of
the state markers (part of the key layout: they must never change), how a batch splits into
one call per slot, the cluster URL, and the errors of a moving slot mapped to TransientError."""

from __future__ import annotations

import re

import pytest
import redis.exceptions as rexc
from attnrec.stream.core.buffer import APPLY_LUA, user_keys
from attnrec.stream.core.groups import LostWrite as Lost
from attnrec.stream.core.groups import Progress, group_events, lost_writes_message, per_slot, progress_key, state_key
from redis.crc import key_slot as redis_key_slot

from attnrec.errors import ConfigError, TransientError
from attnrec.events import ClickEvent
from attnrec.redis_util import HASH_SLOTS, key_slot, redis_errors, slot_tags
from attnrec.settings import Settings, load_settings


@pytest.mark.parametrize("key", ["{u:ana}:recent", "{u:}x", "plain", "{}", "a{b}c{d}", "{u:a}b}:ev", "{u:{x}}:wm", "ü{é}"])
def test_key_slot_is_redis_own(key: str) -> None:
    assert key_slot(key) == redis_key_slot(key.encode())


def test_every_slot_has_a_tag_and_the_tags_never_change() -> None:
    tags = slot_tags()
    assert len(tags) == HASH_SLOTS and len(set(tags)) == HASH_SLOTS
    assert all(key_slot("{" + t + "}") == s for s, t in enumerate(tags))
    # the first base-36 number landing in the slot: fixed forever (state markers carry it)
    assert (tags[0], tags[1], tags[5461], tags[16383]) == ("1bz", "emj", "3zu", "hia")
    assert state_key(0) == "attnrec:state:{" + tags[0] + "}" and key_slot(state_key(12345)) == 12345
    assert key_slot(progress_key(777)) == 777 and state_key() == "attnrec:state" and progress_key() == "attnrec:progress"
    assert max(map(len, tags)) <= 4


def _events(users: list[str]) -> list[tuple[ClickEvent, str, int]]:
    return [(ClickEvent(f"{u}-{k}", u, "i", "view", k), "clicks:0", 10 * i + k) for i, u in enumerate(users) for k in range(2)]


def test_a_batch_is_one_group_on_one_redis_and_one_per_slot_on_a_cluster() -> None:
    users = [f"user-{i}" for i in range(50)]
    evs = _events(users)
    assert group_events(evs, False, lambda u: user_keys(u)[0]) == {None: list(range(len(evs)))}
    groups = group_events(evs, True, lambda u: user_keys(u)[0])
    assert sorted(i for idx in groups.values() for i in idx) == list(range(len(evs)))
    for slot, idx in groups.items():
        assert idx == sorted(idx), "a group keeps the batch's order"
        assert {key_slot(user_keys(evs[i][0].user_id)[0]) for i in idx} == {slot}


def test_the_latest_recommendations_are_one_call_per_slot() -> None:
    recs = {f"user-{i}": f"rec-{i}".encode() for i in range(40)}
    calls = per_slot(recs, lambda u: user_keys(u)[3], [600])
    assert sum(len(keys) for keys, _ in calls) == 40
    for keys, args in calls:
        assert len({key_slot(k) for k in keys}) == 1 and args[0] == 600
        assert args[1:] == [recs[k[len("{u:"):k.index("}")]] for k in keys], "each key with its own payload"


def test_progress_remembers_per_slot_what_a_group_must_still_hold() -> None:
    p = Progress(cluster=True)
    evs = _events(["a", "b"])
    p.remember(7, evs[:2])
    p.remember(9, evs[2:])
    assert p.checks(7, ["clicks:0", "clicks:1"]) == [("clicks:0", 1)] and p.checks(9, ["clicks:0"]) == [("clicks:0", 11)]
    assert p.checks(8, ["clicks:0"]) == []
    p.forget(7)
    assert p.checks(7, ["clicks:0"]) == [] and p.checks(9, ["clicks:0"]) == [("clicks:0", 11)]
    p.forget(everything=True)
    assert p.entries() == []


def test_the_lost_writes_message_names_each_partition_and_where_to_replay_from() -> None:
    msg = lost_writes_message([Lost(12, "clicks:3", 1200, 1234), Lost(40, "clicks:3", 1190, 1240), Lost(None, "clicks:5", -1, 7)])
    assert "clicks:3: Redis (2 slot(s), e.g. slot 12) holds it up to offset 1190" in msg
    assert "replay from offset 1191" in msg and "clicks:5: Redis holds it up to offset -1" in msg
    assert "replay from offset 0" in msg and "kafka-consumer-groups.sh --reset-offsets" in msg


def test_the_apply_script_checks_the_marker_and_the_progress_before_writing() -> None:
    before_writes = APPLY_LUA.index("LPUSH")
    assert APPLY_LUA.index("NOSTATE") < before_writes and APPLY_LUA.index("LOSTWRITES") < before_writes


@pytest.mark.parametrize("url", ["redis+cluster://10.0.0.1:6379,10.0.0.2:6379", "rediss+cluster://u:p@r1:6380/0",
                                 "redis+cluster://r1:7000/?ssl_ca_certs=/etc/ca.crt"])
def test_cluster_urls(url: str) -> None:
    s = load_settings(Settings, redis_url=url)
    assert s.redis_is_cluster


@pytest.mark.parametrize("url, why", [
    ("redis+cluster://r1", "host:port"), ("redis+cluster://r1:6379/2", "database"),
    ("redis+cluster://r1:6379?timeout=3", "ssl_ca_certs"), ("redis+clusters://r1:6379", "redis+cluster://"),
])  # fmt: skip
def test_a_bad_cluster_url_is_one_line_naming_the_setting(url: str, why: str) -> None:
    with pytest.raises(ConfigError, match=f"^ATTNREC_REDIS_URL=.*{re.escape(why)}") as e:
        load_settings(Settings, redis_url=url)
    assert "\n" not in str(e.value)


def test_a_password_in_a_bad_url_is_not_shown() -> None:
    with pytest.raises(ConfigError) as e:
        load_settings(Settings, redis_url="redis+cluster://user:s3cret@r1:6379/5")
    assert "s3cret" not in str(e.value)


@pytest.mark.parametrize("exc", [
    rexc.MovedError("3999 127.0.0.1:6381"), rexc.AskError("3999 127.0.0.1:6381"), rexc.TryAgainError("TRYAGAIN"),
    rexc.ClusterDownError("CLUSTERDOWN The cluster is down"), rexc.MasterDownError("MASTERDOWN"),
    rexc.SlotNotCoveredError('Slot "5" is not covered'), rexc.RedisClusterException("Redis Cluster cannot be connected"),
    rexc.ResponseError("Error running script: CLUSTERDOWN Hash slot not served"), rexc.ConnectionError("refused"),
])  # fmt: skip
def test_a_moving_slot_is_a_transient_error(exc: Exception) -> None:
    with pytest.raises(TransientError), redis_errors():
        raise exc


def test_a_cross_slot_call_is_a_bug_not_a_pause() -> None:
    with pytest.raises(rexc.ResponseError), redis_errors():
        raise rexc.ResponseError("CROSSSLOT Keys in request don't hash to the same slot")


def test_a_command_a_cluster_pipeline_refuses_is_a_bug_not_a_pause() -> None:
    with pytest.raises(rexc.RedisClusterException, match="blocked"), redis_errors():
        raise rexc.RedisClusterException("ERROR: Calling pipelined function evalsha is blocked when running redis in cluster mode...")
