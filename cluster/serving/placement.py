"""Where a version's searcher replicas run on a cluster of several nodes (SPEC 5: a
group's replicas on different nodes, so that losing a node fails no query where another
replica lives)."""
from __future__ import annotations

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy


def _alive() -> list[dict]:
    return [n for n in ray.nodes() if n.get("Alive")]


def alive_nodes() -> list[str]:
    """Ids of the cluster's alive nodes, in a fixed order."""
    return sorted(n["NodeID"] for n in _alive())


def replica_placement(nodes: list[str], group: int, replica: int):
    """Replica r of group g on node (g + r) mod n: a group's replicas on different nodes
    while there are as many nodes as replicas, groups spread over the nodes. Soft: Ray
    places (and restarts) it elsewhere when that node cannot take it or is gone."""
    if len(nodes) < 2:
        return "DEFAULT"
    return NodeAffinitySchedulingStrategy(nodes[(group + replica) % len(nodes)], soft=True)


# Ray 2.60 ignored a soft node affinity for actors that ask no resource (measured: 5 of 6
# on one node); a thousandth of a CPU makes it hold
PLACED_CPUS = 0.001


def replica_cpus(searcher_cpus: float, nodes: list[str]) -> float:
    """The CPUs a searcher asks: the configured ones, or PLACED_CPUS when it is placed."""
    return searcher_cpus or (PLACED_CPUS if len(nodes) > 1 else 0)


HEAD_RESOURCE = "node:__internal_head__"


def coordinator_placement() -> dict:
    """Actor options that put a coordinator on the head node (soft): losing the head loses
    the cluster's control store anyway, so the coordinator adds no node whose loss stops
    the service. On one node: no placement, no CPU."""
    nodes = _alive()
    head = next((n["NodeID"] for n in nodes if HEAD_RESOURCE in n.get("Resources", {})), None)
    if len(nodes) < 2 or head is None:
        return {"num_cpus": 0}
    return {"num_cpus": PLACED_CPUS,
            "scheduling_strategy": NodeAffinitySchedulingStrategy(head, soft=True)}
