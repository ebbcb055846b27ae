"""Serving (SPEC 5): types.py (configs, requests, results, routing), routing.py (shard
groups, replica order, merging the groups' answers: pure functions), batching.py (request
batching), fanout.py (a batch to every group with failover, from the caller's process),
searcher.py (shard searcher actors), coordinator.py (the named, detached query coordinator
and its accessors)."""
