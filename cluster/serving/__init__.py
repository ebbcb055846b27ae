"""Serving (SPEC 5): types.py (configs, requests, results), routing.py (shard groups,
replica order, merging the groups' answers: pure functions), searcher.py (shard searcher
actors), coordinator.py (the named, detached query coordinator and its accessors)."""
