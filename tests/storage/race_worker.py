"""Publishers for the CURRENT race test, importable by spawned processes (shards only)."""
import time

from shards import PublishConflict, Store, publish


class Pause:
    """An on_step hook that sleeps between reading CURRENT and swapping it."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def __call__(self, step, *args):
        if step == "swap" and self.seconds:
            time.sleep(self.seconds)


def publish_one(store_uri: str, data, version: str | None, pause_s: float, barrier=None):
    """("ok", version, CURRENT right after) or ("conflict", message)."""
    if barrier is not None:
        barrier.wait()
    root = Store(store_uri).index("race")
    try:
        manifest = publish(root, data, version=version, rows_per_shard=700,
                           on_step=Pause(pause_s))
    except PublishConflict as exc:
        return ("conflict", str(exc))
    return ("ok", manifest.version, root.current_version())


def publish_in_process(args):
    return publish_one(*args)
