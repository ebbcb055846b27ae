"""Live index jobs (SPEC 7): append (encode on Ray, one publish), delete (a tombstone
set), compact (rewrite and merge shards). Each publishes one new version from CURRENT's
through shards/; `snapline append|delete|compact` and `python -m cluster.live ...`
(under `ray job submit`) call these functions."""
from cluster.live.append import AppendRequest, append, check_append, run_append
from cluster.live.jobs import compact, delete

__all__ = ["AppendRequest", "append", "check_append", "compact", "delete", "run_append"]
