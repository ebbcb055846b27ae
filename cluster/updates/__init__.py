"""Model updates (SPEC 5): reencode.py (train a model for an index, the stale check,
re-encode under a lease, retention), scheduler.py (the detached scheduler actor and its
stop)."""
