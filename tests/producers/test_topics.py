"""Topics as code against the real broker, on topics under a prefix of the test's own."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator

import pytest
from confluent_kafka.admin import AdminClient

from producers import TopicPlan, apply_topics, plan_topics
from producers.topics import ConfigChange, PartitionChange
from schemas.topics import TopicSpec, load_topics


@pytest.fixture
def prefix(admin: AdminClient, unique: Callable[[str], str]) -> Iterator[str]:
    """A managed prefix of the test's own; every topic under it is deleted afterwards."""
    name = f"sidestream.{unique('topics')}."
    yield name
    leftovers = [t for t in admin.list_topics(timeout=10).topics if t.startswith(name)]
    if leftovers:
        for future in admin.delete_topics(leftovers, operation_timeout=15).values():
            with contextlib.suppress(Exception):
                future.result(timeout=15)


def _specs(prefix: str) -> list[TopicSpec]:
    config = {"cleanup.policy": "delete", "retention.ms": "604800000"}
    return [
        TopicSpec(f"{prefix}audit", partitions=3, replication_factor=3, config=config),
        TopicSpec(
            f"{prefix}audit.dlq",
            partitions=1,
            replication_factor=3,
            config={**config, "retention.ms": "2592000000"},
            dead_letter_of=f"{prefix}audit",
        ),
        TopicSpec(f"{prefix}changes", partitions=2, replication_factor=1, config=config),
    ]


def _partitions(admin: AdminClient, topic: str) -> int:
    return len(admin.list_topics(topic, timeout=10).topics[topic].partitions)


def test_apply_creates_missing_topics_and_a_second_apply_does_nothing(
    admin: AdminClient, prefix: str
) -> None:
    specs = _specs(prefix)
    plan = plan_topics(admin, specs, prefix=prefix)
    assert [spec.name for spec in plan.create] == [spec.name for spec in specs]
    brokers = len(admin.list_topics(timeout=10).brokers)
    assert all(spec.replication_factor <= brokers for spec in plan.create)
    if brokers < 3:
        assert any("clamped" in note for note in plan.notes), plan.notes
    assert "+ " in plan.render()

    done = apply_topics(admin, plan)
    assert len(done) == 3
    assert all(line.startswith("created ") for line in done), done
    for spec in specs:
        assert _partitions(admin, spec.name) == spec.partitions

    again = plan_topics(admin, specs, prefix=prefix)
    assert again.in_sync, again.render()
    assert apply_topics(admin, again) == []
    assert "in sync" in again.render()


def test_differences_show_in_the_plan_and_unsupported_changes_are_reported(
    admin: AdminClient, prefix: str
) -> None:
    specs = _specs(prefix)
    apply_topics(admin, plan_topics(admin, specs, prefix=prefix))
    audit, dlq, changes = specs
    wanted = [
        dataclasses.replace(audit, partitions=5),  # more partitions: maybe supported
        dataclasses.replace(dlq, config={**dlq.config, "retention.ms": "86400000"}),
        dataclasses.replace(changes, partitions=1),  # fewer: never possible
    ]
    plan = plan_topics(admin, wanted, prefix=prefix)
    assert plan.partitions == (
        PartitionChange(audit.name, 3, 5),
        PartitionChange(changes.name, 2, 1),
    )
    assert plan.configs == (ConfigChange(dlq.name, "retention.ms", "2592000000", "86400000"),)
    text = plan.render()
    assert f"{audit.name}: partitions 3 -> 5" in text
    assert "retention.ms: 2592000000 -> 86400000" in text

    assert apply_topics(admin, plan, dry_run=True) == [
        f"would add partitions to {audit.name}: 3 -> 5",
        f"left {changes.name} at 2 partitions: the file wants 1, and Kafka cannot remove "
        "partitions (recreate the topic)",
        f"would change config of {dlq.name}: retention.ms 2592000000 -> 86400000",
    ]
    assert _partitions(admin, audit.name) == 3

    done = apply_topics(admin, plan)  # must not raise, whatever the broker supports
    [partition_line] = [line for line in done if f"partitions of {audit.name}:" in line]
    [config_line] = [line for line in done if f"config of {dlq.name}:" in line]
    # Whether the broker can do it is found out from its answer, then checked on the cluster.
    if partition_line.startswith("unsupported by broker"):
        assert _partitions(admin, audit.name) == 3
    else:
        assert partition_line == f"changed partitions of {audit.name}: 3 -> 5"
        assert _partitions(admin, audit.name) == 5
    after = plan_topics(admin, wanted, prefix=prefix)
    if config_line.startswith("unsupported by broker"):
        assert after.configs == plan.configs
    else:
        assert config_line.startswith(f"changed config of {dlq.name}: retention.ms")
        assert after.configs == ()
    assert any("cannot remove partitions" in line for line in done)


def test_the_local_broker_cannot_add_partitions_and_apply_says_so(
    admin: AdminClient, prefix: str
) -> None:
    """The local broker (tansu) lacks CreatePartitions: apply reports it, never raises.
    Against a broker that has it, the partitions are really added."""
    spec = TopicSpec(f"{prefix}grow", partitions=1, replication_factor=1)
    apply_topics(admin, plan_topics(admin, [spec], prefix=prefix))
    plan = plan_topics(admin, [dataclasses.replace(spec, partitions=2)], prefix=prefix)
    [line] = apply_topics(admin, plan)
    supported = _partitions(admin, spec.name) == 2
    assert line.startswith("changed partitions" if supported else "unsupported by broker: ")


def test_topics_not_in_the_file_are_deleted_only_with_prune(
    admin: AdminClient, prefix: str
) -> None:
    specs = _specs(prefix)
    apply_topics(admin, plan_topics(admin, specs, prefix=prefix))
    kept = specs[:2]
    orphan = specs[2].name

    plan = plan_topics(admin, kept, prefix=prefix)
    assert plan.extra == (orphan,)
    assert not plan.in_sync
    assert apply_topics(admin, plan) == [
        f"kept {orphan}: not in the topics file (pass prune=True to delete it)"
    ]
    assert apply_topics(admin, plan, prune=True, dry_run=True) == [f"would delete {orphan}"]
    assert orphan in admin.list_topics(timeout=10).topics

    assert apply_topics(admin, plan, prune=True) == [f"deleted {orphan} (not in the topics file)"]
    assert orphan not in admin.list_topics(timeout=10).topics
    # Topics outside the managed prefix are never candidates.
    assert all(name.startswith(prefix) for name in plan_topics(admin, kept, prefix=prefix).extra)


def test_the_real_topics_file_plans_without_touching_the_cluster(
    admin: AdminClient, prefix: str
) -> None:
    specs = load_topics()
    names = {s.name for s in specs}

    def planned_topics() -> set[str]:
        # Only the topics the plan could touch: tests on other xdist workers create and
        # delete topics of their own meanwhile.
        listed = admin.list_topics(timeout=10).topics
        return {name for name in listed if name in names or name.startswith(prefix)}

    before = planned_topics()
    plan = plan_topics(admin, specs, prefix=prefix)
    assert plan.checked == len(specs)
    assert {s.name for s in plan.create} <= names
    assert plan.extra == ()  # nothing under the test's own prefix
    assert planned_topics() == before
    assert plan.render()


def test_a_plan_renders_one_line_per_difference() -> None:
    plan = TopicPlan(
        checked=3,
        create=(TopicSpec("sidestream.a", 6, 1, {"retention.ms": "1"}),),
        partitions=(PartitionChange("sidestream.b", 3, 6),),
        configs=(ConfigChange("sidestream.b", "cleanup.policy", None, "delete"),),
        extra=("sidestream.old",),
        notes=("replication factor clamped to 1",),
    )
    assert plan.render().splitlines() == [
        "Topics plan: 1 to create, 1 partition changes, 1 config changes, 1 not in the file",
        "  + sidestream.a: create 6 partitions, replication factor 1, retention.ms=1",
        "  ~ sidestream.b: partitions 3 -> 6",
        "  ~ sidestream.b: cleanup.policy: (not set) -> delete",
        "  ? sidestream.old: on the cluster, not in the file (deleted only with prune)",
        "  note: replication factor clamped to 1",
    ]
    assert TopicPlan(checked=2).render() == "Topics are in sync with the file (2 checked)."


def test_a_topic_listed_twice_is_refused(admin: AdminClient, prefix: str) -> None:
    spec = TopicSpec(f"{prefix}x", 1, 1)
    with pytest.raises(ValueError, match="listed twice"):
        plan_topics(admin, [spec, spec], prefix=prefix)
