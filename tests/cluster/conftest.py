"""A real Ray head on loopback (`ray start --head` with token authentication on: a fresh
token in the head's own temp dir, RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH for the head
and every client) and helpers to submit jobs to it with `ray job submit`."""
from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import _free_port

REPO = Path(__file__).resolve().parents[2]
BUNDLED = REPO / "data" / "sift-small"
VENV_BIN = Path(sys.executable).parent


@dataclass
class RayHead:
    gcs_address: str
    dashboard: str
    env: dict           # what a client shell needs: PATH with the venv, RAY_AUTH_MODE=token

    def ray(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run([str(VENV_BIN / "ray"), *args], env=self.env, cwd=REPO, text=True,
                              capture_output=True, check=check, timeout=timeout)

    def submit(self, config: Path, job_id: str, *extra: str, agent_wait_s: float = 120) -> None:
        """`ray job submit --no-wait` of the build job, from the repository as working dir.
        Retried while the head's job agent is not up yet (a fresh head on a busy machine
        answers "No available agent to submit job" for a while)."""
        deadline = time.monotonic() + agent_wait_s
        while True:
            done = self.ray("job", "submit", "--address", self.dashboard, "--submission-id",
                            job_id, "--working-dir", str(REPO), "--no-wait", "--", "python", "-m",
                            "cluster.build", "--config", str(config), *extra, check=False)
            if done.returncode == 0:
                return
            if "No available agent" not in done.stderr or time.monotonic() > deadline:
                raise RuntimeError(f"ray job submit exited {done.returncode}: "
                                   f"{done.stderr[-3000:]}")
            time.sleep(2)

    def status(self, job_id: str) -> str:
        done = self.ray("job", "status", "--address", self.dashboard, job_id)
        found = re.findall(r"\b(pending|running|stopped|succeeded|failed)\b",
                           (done.stdout + done.stderr).lower())
        return found[-1].upper() if found else "UNKNOWN"

    def wait(self, job_id: str, timeout: float = 600) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status(job_id)
            if status in ("STOPPED", "SUCCEEDED", "FAILED"):
                return status
            time.sleep(1)
        raise TimeoutError(f"job {job_id} still {status} after {timeout} s")

    def logs(self, job_id: str) -> str:
        return self.ray("job", "logs", "--address", self.dashboard, job_id, check=False).stdout


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory, s3_endpoint):
    """`ray start --head` bound to loopback, 2 CPUs, its own temp dir; stopped after the
    module. Started after the S3 endpoint so that its workers see AWS_ENDPOINT_URL."""
    temp_dir = tmp_path_factory.mktemp("ray")
    token = temp_dir / "auth_token"         # never ~/.ray: a fresh machine has none
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",
           "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    env.pop("RAY_ADDRESS", None)
    env.pop("RAY_AUTH_TOKEN", None)
    port, dash = _free_port(), _free_port()
    head = RayHead(f"127.0.0.1:{port}", f"http://127.0.0.1:{dash}", env)
    with open(temp_dir / "ray-start.log", "w") as log:   # not a pipe: the daemons keep it open
        subprocess.run([str(VENV_BIN / "ray"), "start", "--head", "--node-ip-address=127.0.0.1",
                        f"--port={port}", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
                        f"--ray-client-server-port={_free_port()}", "--num-cpus=2",
                        "--disable-usage-stats", f"--temp-dir={temp_dir}"],
                       env=env, stdout=log, stderr=subprocess.STDOUT, check=True, timeout=120)
    try:
        yield head
    finally:
        stop_processes_of(temp_dir, port)


def stop_processes_of(temp_dir: Path, gcs_port: int, grace_s: float = 10.0) -> None:
    """Stop this head's processes only: those naming `temp_dir` or its GCS port on their
    command line (GCS, raylet, dashboard, client server ...) and their descendants
    (workers, agents), not other Ray clusters on the machine as `ray stop` would."""
    import signal

    gcs = re.compile(rb"-(-address|-gcs-address|-gcs_address)=[^\0 ]*:%d(\0| |$)" % gcs_port)

    def ours() -> list[int]:
        """Processes naming temp_dir, and all their descendants (workers, agents)."""
        parent, named = {}, set()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                state, ppid = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:2]
                if state == "Z":           # exited, not yet reaped: nothing to stop
                    continue
                parent[int(entry.name)] = int(ppid)
                cmdline = (entry / "cmdline").read_bytes()
                if str(temp_dir).encode() in cmdline or gcs.search(cmdline):
                    named.add(int(entry.name))
            except (OSError, IndexError, ValueError):
                pass
        found, grew = set(named), True
        while grew:
            more = {pid for pid, ppid in parent.items() if ppid in found} - found
            found |= more
            grew = bool(more)
        return sorted(found)

    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in ours():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace_s
        while ours() and time.monotonic() < deadline:
            time.sleep(0.2)


@pytest.fixture()
def tiled_source():
    """make(path, n_rows): a u8bin source made by tiling the bundled SIFT base."""
    from shards import open_vectors

    def make(path: Path, n_rows: int) -> Path:
        base = open_vectors(str(BUNDLED / "base.u8bin")).read()
        with open(path, "wb") as f:
            f.write(np.array([n_rows, base.shape[1]], dtype="<u4").tobytes())
            for start in range(0, n_rows, base.shape[0]):
                f.write(base[: min(base.shape[0], n_rows - start)].tobytes())
        return path

    return make
