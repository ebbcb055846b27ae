"""The re-encode scheduler (SPEC 5): a detached Ray actor per index that re-encodes it
whenever a newer model appears, and its explicit stop.

    snapline schedule --store S --name N --every 1h
    snapline schedule --stop --name N
"""
from __future__ import annotations

import logging
import math
import threading
import time

import ray

from cluster.ray_session import connect
from shards.manifest import check_name
from cluster.updates.reencode import (CheckedReencode, ReencodeRequest, check_reencode,
                                      reencode, run_reencode)

log = logging.getLogger(__name__)

__all__ = ["SCHEDULER_NAMESPACE", "parse_period", "scheduler_name", "start_scheduler",
           "stop_scheduler"]


@ray.remote(max_restarts=-1, max_task_retries=0)
class ReencodeScheduler:
    """Checks every `every_s` seconds whether index `name` is stale; re-encodes it if so.
    `first`: the check its starter made, used by the first run instead of checking again."""

    def __init__(self, req: ReencodeRequest, every_s: float,
                 first: CheckedReencode | None = None):
        logging.basicConfig(level=logging.INFO)
        self.req, self.every_s = req, every_s
        self.runs: list[dict] = []
        self._stop = threading.Event()
        threading.Thread(target=self._loop, args=(first,), daemon=True).start()

    def _loop(self, first: CheckedReencode | None) -> None:
        while not self._stop.is_set():
            started = time.time()
            try:
                result = run_reencode(first) if first else reencode(self.req)
            except Exception as exc:  # noqa: BLE001 - reported, then the next period tries again
                log.exception("scheduled re-encode of %s failed", self.req.name)
                result = {"error": f"{type(exc).__name__}: {exc}"}
            first = None
            self.runs.append({"started": started, **{k: v for k, v in result.items()
                                                     if isinstance(v, (str, int, float, bool))}})
            self._stop.wait(self.every_s)

    def status(self) -> dict:
        return {"name": self.req.name, "every_s": self.every_s, "runs": self.runs[-20:]}

    def stop(self) -> None:
        self._stop.set()


SCHEDULER_NAMESPACE = "snapline"


def scheduler_name(name: str) -> str:
    """The actor name of index `name`'s scheduler (in SCHEDULER_NAMESPACE)."""
    return f"reencode:{name}"


def start_scheduler(req: ReencodeRequest, every_s: float,
                    address: str | None = None) -> ray.actor.ActorHandle:
    """A detached scheduler actor named `reencode:<name>` (replaces nothing if it exists)
    on the Ray cluster at `address` (joined unless this process has). Checks once, before
    Ray; the scheduler's first run takes that check."""
    if isinstance(every_s, bool) or not isinstance(every_s, (int, float)) \
            or not math.isfinite(every_s) or every_s <= 0:
        raise ValueError(f"--every must be a finite period > 0, got {every_s!r} s")
    checked = check_reencode(req)
    connect(address, SCHEDULER_NAMESPACE)
    return ReencodeScheduler.options(
        name=scheduler_name(req.name), namespace=SCHEDULER_NAMESPACE, lifetime="detached",
        get_if_exists=True, num_cpus=0).remote(req, every_s, checked)


def stop_scheduler(name: str, address: str | None = None) -> dict:
    """Stop the scheduler of index `name` (its loop, then the detached actor, for good);
    returns its last status. ValueError naming it when there is none. A re-encode it was
    running stops with it: the served version stays, the lease expires, the next run
    resumes the unfinished version."""
    check_name(name, "--name")      # before Ray: a bad name cannot name a scheduler
    connect(address, SCHEDULER_NAMESPACE)
    try:
        handle = ray.get_actor(scheduler_name(name), namespace=SCHEDULER_NAMESPACE)
    except ValueError:
        raise ValueError(f"no re-encode scheduler for index {name!r} on this Ray cluster "
                         f"(actor {scheduler_name(name)!r}, namespace "
                         f"{SCHEDULER_NAMESPACE!r}); start one with `snapline schedule`") from None
    try:
        status = ray.get(handle.status.remote(), timeout=60)
        ray.get(handle.stop.remote(), timeout=60)
    finally:
        ray.kill(handle, no_restart=True)
    return status


def parse_period(text: str) -> float:
    """'90s', '15m', '1h', '2d' or plain seconds -> seconds: finite and > 0."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = str(text).strip().lower()
    try:
        seconds = float(text[:-1]) * units[text[-1]] if text and text[-1] in units \
            else float(text)
    except ValueError:
        raise ValueError(f"--every: cannot read {text!r} as a period (e.g. 90s, 15m, 1h)") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"--every: the period must be finite and > 0, got {text!r}")
    return seconds
