"""The re-encode scheduler (SPEC 5): a detached Ray actor per index that checks every
period whether a newer model makes the index stale and, when it does, submits the
re-encode as a Ray job (the Jobs SDK: `python -m cluster.cli reencode ... --if-stale`,
the same command a user or cron runs), waits for it and records its outcome. The work
runs in the job's own driver and its encode workers, never inside the scheduler.

    snapline schedule --store S --name N --every 1h
    snapline schedule --stop --name N          # also stops a re-encode job in flight
"""
from __future__ import annotations

import json
import logging
import math
import shlex
import sys
import threading
import time
import uuid

import ray

from cluster.ray_session import connect
from shards.manifest import check_name
from cluster.updates.reencode import ReencodeRequest, check_reencode, is_stale

log = logging.getLogger(__name__)

__all__ = ["SCHEDULER_NAMESPACE", "parse_period", "reencode_entrypoint", "scheduler_name",
           "start_scheduler", "stop_scheduler"]

JOB_POLL_S = 1.0
AGENT_WAIT_S = 120.0    # a fresh head's job agent answers "No available agent" for a while
DONE = ("SUCCEEDED", "FAILED", "STOPPED")


def reencode_entrypoint(req: ReencodeRequest) -> str:
    """The shell command of one scheduled re-encode: `snapline reencode` of `req`, if
    stale, by this interpreter (the cluster's), joining the cluster the job runs on."""
    return shlex.join([sys.executable, "-m", "cluster.cli", "reencode", "--store", req.store,
                       "--name", req.name, "--model", req.model,
                       *(["--if-stale"] if req.if_stale else []),
                       "--keep", str(req.keep), "--lease-ttl", repr(req.lease_ttl_s)])


def jobs_client():
    """A Jobs SDK client of the connected cluster's job server (Ray's dashboard); a
    ConnectionError saying so when the cluster runs without one."""
    from ray._private import ray_constants
    from ray.experimental import internal_kv
    from ray.job_submission import JobSubmissionClient

    url = internal_kv._internal_kv_get(ray_constants.DASHBOARD_ADDRESS,
                                       namespace=ray_constants.KV_NAMESPACE_DASHBOARD)
    try:
        if not url:
            raise ConnectionError("no dashboard address recorded")
        return JobSubmissionClient(f"http://{url.decode()}")
    except ConnectionError as exc:
        raise ConnectionError(
            f"the re-encode scheduler submits Ray jobs, and this Ray cluster runs no job "
            f"server ({exc}): start Ray with its dashboard (`ray start --head` does, "
            f"`ray.init(include_dashboard=False)` does not)") from None


def _up_to_date(req: ReencodeRequest) -> str | None:
    """Why no re-encode is needed now (None: one is): the index already uses the model
    asked for. Without if_stale, every period re-encodes."""
    if not req.if_stale:
        return None
    stale, encoded, newest = is_stale(req.store, req.name)
    if req.model == "latest":
        return None if stale else f"up to date (model {encoded})"
    return None if req.model != encoded else f"up to date (model {encoded})"


def _summary(logs: str) -> dict:
    """The scalar fields of the JSON summary `snapline reencode` prints last."""
    at = logs.rfind("\n{")
    try:
        found, _ = json.JSONDecoder().raw_decode(logs, at + 1 if at >= 0 else 0)
    except ValueError:
        return {}
    return {k: v for k, v in found.items() if isinstance(v, (str, int, float, bool))}


@ray.remote(max_restarts=-1, max_task_retries=0)
class ReencodeScheduler:
    """Every `every_s` seconds: is index `name` stale? If so, submit its re-encode as a
    Ray job, wait for the job, record it. A re-encode job of the index already running
    (another scheduler's, or this one's before Ray restarted it) is waited for instead
    of submitting another."""

    def __init__(self, req: ReencodeRequest, every_s: float):
        logging.basicConfig(level=logging.INFO)
        self.req, self.every_s = req, every_s
        self.runs: list[dict] = []
        self.job: str | None = None
        self._jobs = jobs_client()
        self._stop = threading.Event()
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.time()
            try:
                reason = _up_to_date(self.req)
                run = {"skipped": reason} if reason else self._run_job()
            except Exception as exc:  # noqa: BLE001 - reported, then the next period tries again
                log.exception("scheduled re-encode of %s failed", self.req.name)
                run = {"error": f"{type(exc).__name__}: {exc}"}
            self.runs.append({"started": started, "ended": time.time(), **run})
            self._stop.wait(self.every_s)

    def _submit(self) -> str:
        job = f"snapline-reencode-{self.req.name}-{uuid.uuid4().hex[:8]}"
        deadline = time.monotonic() + AGENT_WAIT_S
        while True:
            try:
                return self._jobs.submit_job(
                    entrypoint=reencode_entrypoint(self.req), submission_id=job,
                    metadata={"snapline": "reencode", "index": self.req.name})
            except RuntimeError as exc:
                if "No available agent" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(2)

    def _unfinished_job(self) -> str | None:
        """A re-encode job of this index still running (submitted before a restart)."""
        for job in self._jobs.list_jobs():
            meta = job.metadata or {}
            if meta.get("snapline") == "reencode" and meta.get("index") == self.req.name \
                    and job.status.value not in DONE:
                return job.submission_id
        return None

    def _run_job(self) -> dict:
        running = self._unfinished_job()      # another scheduler's, or ours before a restart
        self.job = running or self._submit()
        log.info("re-encode of %s: Ray job %s", self.req.name, self.job)
        status = self._jobs.get_job_status(self.job).value
        while status not in DONE:           # (after stop(): until the job is STOPPED)
            time.sleep(JOB_POLL_S)
            status = self._jobs.get_job_status(self.job).value
        info = self._jobs.get_job_info(self.job)
        run = {"job": self.job, "submitted": running is None, "status": status,
               **_summary(self._jobs.get_job_logs(self.job))}
        if status != "SUCCEEDED":
            run["error"] = (info.message or status)[-2000:]
        self.job = None
        return run

    def status(self) -> dict:
        return {"name": self.req.name, "every_s": self.every_s, "job_running": self.job,
                "runs": self.runs[-20:]}

    def stop(self) -> None:
        """End the loop and stop the re-encode job in flight (the served version stays; its
        lease expires and the next run resumes the unfinished version)."""
        self._stop.set()
        if self.job is not None:
            self._jobs.stop_job(self.job)


SCHEDULER_NAMESPACE = "snapline"


def scheduler_name(name: str) -> str:
    """The actor name of index `name`'s scheduler (in SCHEDULER_NAMESPACE)."""
    return f"reencode:{name}"


def start_scheduler(req: ReencodeRequest, every_s: float,
                    address: str | None = None) -> ray.actor.ActorHandle:
    """A detached scheduler actor named `reencode:<name>` (replaces nothing if it exists)
    on the Ray cluster at `address` (joined unless this process has). Checks the request
    before Ray (each job checks again: the store may change between periods), and that
    the cluster can run jobs."""
    if isinstance(every_s, bool) or not isinstance(every_s, (int, float)) \
            or not math.isfinite(every_s) or every_s <= 0:
        raise ValueError(f"--every must be a finite period > 0, got {every_s!r} s")
    check_reencode(req)
    connect(address, SCHEDULER_NAMESPACE)
    jobs_client()                   # the cluster runs a job server, before any actor starts
    return ReencodeScheduler.options(
        name=scheduler_name(req.name), namespace=SCHEDULER_NAMESPACE, lifetime="detached",
        get_if_exists=True, num_cpus=0).remote(req, every_s)


def stop_scheduler(name: str, address: str | None = None) -> dict:
    """Stop the scheduler of index `name` (its loop, then the detached actor, for good);
    returns its last status. ValueError naming it when there is none. A re-encode job it
    was running is stopped with it: the served version stays, the lease expires, the next
    run resumes the unfinished version."""
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
