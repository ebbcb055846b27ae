"""`snapline fsck`: verify every version, list orphans, repair only what no manifest
references (issue 12)."""
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from cluster.cli import main
from indexer import VLQIndex
from shards import Store, publish
from shards.claims import claim_build
from shards.fsck import fsck
from shards.registry import Lease


class Interrupt(Exception):
    pass


def _variant(index, extra):
    idx = VLQIndex.from_arrays(index.to_arrays())
    idx.add(np.full((extra, index.dim), float(extra), np.float32))
    return idx.to_arrays()


def _killed_publish(root, data):
    """A publish killed after writing its shards (before its manifest)."""
    def crash(step, *args):
        if step == "manifest":
            raise Interrupt()
    with pytest.raises(Interrupt):
        publish(root, data, rows_per_shard=700, on_step=crash)


def _age(path: Path, seconds: float):
    for p in [path, *path.rglob("*")] if path.is_dir() else [path]:
        t = time.time() - seconds
        os.utime(p, (t, t), follow_symlinks=False)


@pytest.fixture()
def store(index, tmp_path):
    root = Store(str(tmp_path / "store")).index("demo")
    publish(root, index.to_arrays(), rows_per_shard=700)
    publish(root, _variant(index, 1), rows_per_shard=700)
    return root


def _fsck_cli(capsys, *argv):
    code = main(["fsck", *argv])
    out, err = capsys.readouterr()
    return code, out.splitlines(), err


def test_a_clean_store_exits_0(store, capsys, tmp_path):
    report = fsck(store.store)
    assert report.clean and report.checked_versions == 2
    code, out, err = _fsck_cli(capsys, "--store", str(tmp_path / "store"))
    assert (code, out) == (0, []) and "2 versions verified, 0 problems, 0 orphans" in err


def test_killed_publish_temp_files_and_old_leases_are_listed_then_repaired(
        store, index, tmp_path, capsys):
    base = tmp_path / "store" / "indexes" / "demo"
    _killed_publish(store, _variant(index, 2))                     # v000003: shards, no manifest
    (base / "v000001" / "shards" / "part-00000-abc.parquet.tmp-0123456789ab").write_bytes(b"x")
    (base / "v000001" / "shards" / "part-00009-0000000000000000.parquet").write_bytes(b"x")
    (base / "CURRENT.tmp-0123456789ab").write_bytes(b"v000001\n")
    first = Lease(store, ttl_s=0.01)
    assert first.acquire()
    time.sleep(0.05)
    live = Lease(store, ttl_s=600)
    assert live.acquire()                                          # lease-000002, live
    code, out, _ = _fsck_cli(capsys, "--store", str(tmp_path / "store"), "--name", "demo")
    assert code == 1 and len(out) == 5 and all(line.startswith("orphan: ") for line in out)
    text = "\n".join(out)
    assert "v000003: no manifest" in text and "lease-000001: superseded" in text
    assert "part-00009-0000000000000000.parquet: not listed in the manifest" in text
    assert "leases/lease-000002" not in text
    code, out, _ = _fsck_cli(capsys, "--store", str(tmp_path / "store"), "--repair")
    assert code == 1 and all("[kept: younger than --min-age]" in line for line in out)
    assert (base / "v000003").exists()                             # young: maybe in flight
    _age(base, 7200)
    code, out, _ = _fsck_cli(capsys, "--store", str(tmp_path / "store"), "--repair")
    assert code == 0 and len(out) == 5 and all(line.endswith("[removed]") for line in out)
    assert not (base / "v000003").exists() and (base / "leases" / "lease-000002").exists()
    assert live.holder()["owner"] == live.owner
    assert _fsck_cli(capsys, "--store", str(tmp_path / "store"))[:2] == (0, [])
    assert publish(store, _variant(index, 2), rows_per_shard=700).version == "v000003"
    assert fsck(store.store).clean


def test_damage_is_a_problem_and_never_repaired(store, tmp_path, capsys):
    base = tmp_path / "store" / "indexes" / "demo"
    manifest = json.loads((base / "v000001" / "manifest.json").read_bytes())
    shard = base / "v000001" / manifest["shards"][1]["path"]
    blob = bytearray(shard.read_bytes())
    blob[100] ^= 1
    shard.write_bytes(bytes(blob))
    model = tmp_path / "store" / "models" / manifest["model_version"] / "meta.json"
    (base / "v000002" / "shards" / "stray.parquet").write_bytes(b"x")   # in CURRENT's version
    _age(tmp_path / "store", 7200)
    code, out, _ = _fsck_cli(capsys, "--store", str(tmp_path / "store"), "--repair",
                             "--min-age", "0")
    assert code == 1 and len(out) == 2
    assert out[0].startswith("problem: ") and "checksum mismatch" in out[0]
    assert manifest["shards"][1]["path"] in out[0]
    assert "stray.parquet: not listed in the manifest (in CURRENT's version" in out[1]
    assert shard.exists() and (base / "v000002" / "shards" / "stray.parquet").exists()
    model.write_text("{")
    code, out, _ = _fsck_cli(capsys, "--store", str(tmp_path / "store"))
    assert code == 1 and any(manifest["model_version"] in line and "not valid JSON" in line
                             for line in out)


def test_abandoned_build_claims(store, tmp_path):
    fresh = claim_build(store, {"a": 1})
    assert fsck(store.store).clean                                  # a build in progress
    build = tmp_path / "store" / "indexes" / "demo" / fresh.version / "build.json"
    _age(build, 2 * 86400)
    report = fsck(store.store, repair=True, min_age_s=0)
    assert [f.detail.split(" (")[0] for f in report.findings] == \
        ["abandoned build claim unfinished for 48 h"]
    assert not build.parent.exists()


def test_links_out_of_the_store_are_problems(store, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "manifest.json").write_text("{}")
    (tmp_path / "store" / "indexes" / "demo" / "v000007").symlink_to(outside)
    report = fsck(store.store, repair=True, min_age_s=0)
    assert len(report.findings) == 1 and "outside the store" in report.findings[0].detail
    assert (outside / "manifest.json").exists()


@pytest.mark.parametrize("argv,message", [
    (["--store", "{tmp}/nowhere"], "nowhere: no such store"),
    (["--store", "{tmp}/store", "--name", "../x"], "index name '../x' must be"),
    (["--store", "{tmp}/store", "--name", "nosuch"], "indexes/nosuch: no such index"),
    (["--store", "foo://bucket/x"], "unknown or unavailable protocol 'foo'"),
    (["--store", "{tmp}/store", "--min-age", "nan"], "--min-age must be >= 0 seconds"),
    (["--store", "{tmp}/store", "--min-age", "-1"], "--min-age must be >= 0 seconds"),
])
def test_bad_arguments_exit_2_with_one_line(store, tmp_path, capsys, argv, message):
    code, out, err = _fsck_cli(capsys, *[a.format(tmp=tmp_path) for a in argv])
    assert code == 2 and out == [] and len(err.splitlines()) == 1 and message in err


def test_fsck_on_s3_lists_and_repairs_a_killed_publish(index, s3_bucket):
    root = Store(f"s3://{s3_bucket}/store").index("demo")
    publish(root, index.to_arrays(), rows_per_shard=700)
    _killed_publish(root, _variant(index, 3))
    report = fsck(root.store)
    assert [f.uri.rsplit("/", 1)[1] for f in report.findings] == ["v000002"]
    assert report.checked_versions == 1
    report = fsck(root.store, repair=True, min_age_s=0)
    assert report.removed == [report.findings[0].uri]
    assert fsck(root.store).clean and root.folders() == ["v000001"]


def test_an_unreachable_store_exits_1_with_one_line(tmp_path):
    import subprocess
    import sys

    env = dict(os.environ, AWS_ENDPOINT_URL="http://127.0.0.1:9", AWS_ACCESS_KEY_ID="x",
               AWS_SECRET_ACCESS_KEY="y", AWS_DEFAULT_REGION="us-east-1", AWS_MAX_ATTEMPTS="1",
               PYTHONPATH=str(Path(__file__).parents[2]))
    run = subprocess.run([sys.executable, "-m", "cluster.cli", "fsck", "--store",
                          "s3://snapline-unreachable/x"], capture_output=True, text=True,
                         env=env, timeout=120)
    errors = [line for line in run.stderr.splitlines() if " INFO " not in line]
    assert run.returncode == 1 and run.stdout == ""
    assert errors == [errors[0]] and "s3://snapline-unreachable/x: store unreachable " \
        "(EndpointConnectionError" in errors[0]
