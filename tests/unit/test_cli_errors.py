"""The exit-status policy of every `snapline` subcommand (cluster.exit_status): bad input is
exit 2 with one stderr line naming the argument, key or file; an environmental failure is
exit 1 with one line; neither prints a traceback unless -v. Nothing here starts Ray."""
import json

import numpy as np
import pytest

from cluster.cli import main
from cluster.exit_status import exit_code, one_line
from indexer import VLQIndex
from shards import Store, write_vectors
from shards.registry import Lease


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad-inputs")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1200, 16)).astype(np.float32)
    write_vectors(str(root / "learn.fbin"), x)
    x[7, 3] = np.nan
    write_vectors(str(root / "nan.fbin"), x)
    # an older model: written by VLQIndex.save_model directly, so no validation, sample,
    # creation time or index in its meta
    index = VLQIndex(16, nlist=4, nedge=2, code_bytes=4, nlambda=8)
    index.train(x[:600][np.isfinite(x[:600]).all(axis=1)])
    index.save_model(str(root / "store"))
    (root / "a-file").write_text("not a folder")
    (root / "cfgdir").mkdir()
    (root / "nedge.yaml").write_text(json.dumps({
        "name": "t", "store": str(root / "bst"), "source": {"uri": str(root / "learn.fbin")},
        "index": {"nlist": 8, "nedge": 8, "code_bytes": 4}}))
    (root / "nan.yaml").write_text(
        f"name: t\nstore: {root / 'bst'}\nsource: {{uri: {root / 'learn.fbin'}}}\n"
        "workers: {cpus_per_worker: .nan, gpus_per_worker: 0}\n")
    (root / "inf.yaml").write_text(
        f"name: t\nstore: {root / 'bst'}\nsource: {{uri: {root / 'learn.fbin'}}}\n"
        "workers: {gpus_per_worker: .inf}\n")
    (root / "foo.yaml").write_text(
        f"name: t\nstore: foo://bst\nsource: {{uri: {root / 'learn.fbin'}}}\n")
    return root


STORE = "{root}/store"
LEARN = "{root}/learn.fbin"
PLAN = ["plan", "--n", "1000000", "--dim", "128"]
TRAIN = ["train", "--store", "{root}/newstore", "--learn", LEARN]

BAD = [  # (argv, what the one line must name)
    (["models", "--store", "{root}/nostore"], "--store {root}/nostore: no such store"),
    (["models", "--store", "foo://x"], "unsupported storage protocol 'foo'"),
    (PLAN + ["--encode-workers", "-3"], "--encode-workers"),
    (PLAN + ["--nlist", "0"], "--nlist"),
    (PLAN + ["--nlist", "16", "--nedge", "64"], "nedge must be < nlist"),
    (PLAN + ["--gpu-mem-gb", "nan"], "--gpu-mem-gb"),
    (PLAN + ["--n", "many"], "argument --n"),
    (["schedule", "--store", STORE, "--name", "a", "--every", "0s"], "--every"),
    (["schedule", "--store", STORE, "--name", "a", "--every=-1h"], "--every"),
    (["schedule", "--store", STORE, "--name", "a", "--every", "nan"], "--every"),
    (["schedule", "--store", STORE, "--name", "a", "--every", "inf"], "--every"),
    (["schedule", "--store", STORE, "--name", "../x", "--every", "1h"], "--name '../x'"),
    (["schedule", "--stop", "--name", "../x"], "--name '../x'"),
    (["schedule", "--store", "{root}/nostore", "--name", "a", "--every", "1h"],
     "{root}/nostore: no such store"),
    (["schedule", "--store", STORE, "--name", "a", "--every", "1h", "--lease-ttl", "-5"],
     "--lease-ttl"),
    (["reencode", "--store", STORE, "--name", "a", "--keep", "1"], "--keep"),
    (["reencode", "--store", STORE, "--name", "a", "--model", "../m"], "--model '../m'"),
    (TRAIN + ["--nlist", "-5"], "--nlist"),
    (TRAIN + ["--nlist", "1"], "--nlist"),
    (TRAIN + ["--nlist", "16", "--nlambda", "0"], "--nlambda"),
    (TRAIN + ["--nlist", "16", "--nlambda", "300"], "--nlambda"),
    (TRAIN + ["--nlist", "16", "--nedge", "64"], "--nedge 64 must be < --nlist 16"),
    (TRAIN + ["--nlist", "16", "--sample-size", "0"], "--sample-size"),
    (["train", "--store", "foo://x", "--learn", LEARN, "--nlist", "16"], "--store foo://x"),
    (["train", "--store", "{root}/newstore", "--learn", "{root}/nan.fbin", "--nlist", "8",
      "--code-bytes", "4"], "{root}/nan.fbin: training vectors: row 7 contains NaN or inf"),
    (["train", "--store", "{root}/newstore", "--learn", "{root}/cfgdir", "--nlist", "8"],
     "{root}/cfgdir"),
    (["train", "--store", STORE, "--name", "a", "--sample-size", "0"], "--sample-size"),
    (["build", "--config", "{root}/cfgdir"], "{root}/cfgdir: is a folder"),
    (["build", "--config", "{root}/nedge.yaml"], "index.nedge: must be < index.nlist"),
    (["build", "--config", "{root}/nan.yaml"], "workers.cpus_per_worker: must be a finite"),
    (["build", "--config", "{root}/inf.yaml"], "workers.gpus_per_worker: must be a finite"),
    (["build", "--config", "{root}/foo.yaml"], "store foo://bst: unsupported storage protocol"),
    (["bench", "{root}", "--out", "{root}/a-file"], "out_dir {root}/a-file: exists and is not"),
    (["bench", "{root}", "--out", "{root}/bo", "--threads", "0"], "threads"),
    (["bench", "{root}", "--out", "{root}/bo", "--nlist", "0"], "nlist_vlq"),
    (["bench", "{root}", "--out", "{root}/bo", "--systems", ""], "unknown"),
    (["bench", "{root}", "--out", "{root}/bo", "--nlists", "512,1"], "nlists=(512, 1)"),
    (["bench", "{root}", "--out", "{root}/bo", "--nlists", "512,x"], "--nlists must be"),
    (["bench", "{root}", "--out", "{root}/bo", "--pq-bits", "4,6"], "pq_bits=(4, 6)"),
    (["bench", "{root}", "--out", "{root}/bo", "--repeats", "0"], "repeats=0"),
    (["serve", "--store", STORE, "--name", "a", "--replicas", "0"], "replicas"),
    (["serve", "--store", STORE, "--name", "a", "--batch-window-ms", "-1"], "batch_window_ms"),
    (["serve", "--store", STORE, "--name", "a", "--batch-max-queries", "0"],
     "batch_max_queries must be an integer >= 1, got 0"),
    (["nosuchcommand"], "invalid choice"),
    (["append", "--store", "{root}/nostore", "--name", "a", "--source", LEARN],
     "--store {root}/nostore: no such store"),
    (["append", "--store", STORE, "--name", "a", "--source", LEARN, "--workers", "0"],
     "--workers must be an integer >= 1"),
    (["append", "--store", STORE, "--name", "a", "--source", LEARN], "no published index named 'a'"),
    (["delete", "--store", STORE, "--name", "a"], "the following arguments are required: --ids"),
    (["delete", "--store", STORE, "--name", "../a", "--ids", "x.npy"], "--name '../a'"),
    (["compact", "--store", STORE, "--name", "a", "--min-deleted", "2"], "--min-deleted"),
    (["compact", "--store", STORE, "--name", "a"], "no published index named 'a'"),
]


def _run(argv, root, capsys):
    code = main([a.format(root=root) for a in argv])
    return code, capsys.readouterr()


@pytest.mark.parametrize("argv, culprit", BAD, ids=[" ".join(a[:1] + a[-2:]) for a, _ in BAD])
def test_bad_input_is_exit_2_with_one_line_naming_it(files, argv, culprit, capsys):
    code, out = _run(argv, files, capsys)
    lines = out.err.strip().splitlines()
    assert code == 2, out.err
    assert len(lines) == 1 and "Traceback" not in out.err, out.err
    assert culprit.format(root=files) in lines[0]
    assert lines[0].startswith("snapline")
    assert not (files / "newstore").exists() and not (files / "bst").exists()


def test_models_lists_an_older_model_without_metrics(files, capsys):
    """Item 1: a model with no validation (or sample, creation time, index) is listed
    with '-' where the table has nothing to show."""
    code, out = _run(["models", "--store", STORE], files, capsys)
    assert code == 0, out.err
    row = out.out.splitlines()[1].split()
    assert row[0].startswith("m-") and row[1] == row[2] == "-" and row[-2:] == ["-", "-"]
    code, out = _run(["models", "--store", STORE, "--json"], files, capsys)
    assert code == 0 and json.loads(out.out)[0]["validation"] is None


def test_models_on_a_malformed_meta_json_names_the_file(files, tmp_path, capsys):
    store = tmp_path / "store"
    src = next((files / "store" / "models").iterdir())
    dst = store / "models" / src.name
    dst.mkdir(parents=True)
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    doc = json.loads((dst / "meta.json").read_text())
    for damage, culprit in ((lambda d: d.update(meta=3), "'meta' must be a mapping"),
                            (lambda d: d.pop("arrays"), "'arrays' must be a mapping"),
                            (lambda d: d["meta"].update(training="x", build=[1]), None),
                            (lambda d: d["meta"].pop("shape"), "'shape'")):
        broken = json.loads(json.dumps(doc))
        damage(broken)
        (dst / "meta.json").write_text(json.dumps(broken))
        code, out = _run(["models", "--store", str(store)], files, capsys)
        if culprit is None:       # sections of the wrong type are listed as missing
            assert code == 0 and "-" in out.out.splitlines()[1]
            continue
        assert code == 2 and len(out.err.strip().splitlines()) == 1, out.err
        assert f"{dst}/meta.json" in out.err and culprit in out.err


@pytest.fixture()
def fresh_s3fs():
    """s3fs caches a file system per storage options, not per environment: start and end
    with none, so that the dead endpoint below never serves another test's store."""
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    yield
    s3fs.S3FileSystem.clear_instance_cache()


def test_unreachable_s3_store_is_exit_1_naming_it(files, monkeypatch, capsys, fresh_s3fs):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    code, out = _run(["models", "--store", "s3://no-bucket/unreachable-x"], files, capsys)
    assert code == 1, out.err
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and "s3://no-bucket/unreachable-x" in lines[0]
    assert "StoreUnavailableError" in lines[0]


def test_missing_ray_cluster_is_exit_1_in_one_line(files, monkeypatch, capsys):
    """Ray's ConnectionError (no running instance) is environmental; -v adds the traceback."""
    import cluster.updates.scheduler as scheduler

    def no_ray(*_, **__):
        raise ConnectionError("Could not find any running Ray instance.\nPlease specify one.")

    monkeypatch.setattr(scheduler, "connect", no_ray)
    code, out = _run(["schedule", "--stop", "--name", "a"], files, capsys)
    assert code == 1 and out.err.strip() == ("snapline schedule: ConnectionError: Could not "
                                             "find any running Ray instance. Please specify one.")
    code, out = _run(["-v", "schedule", "--stop", "--name", "a"], files, capsys)
    assert code == 1 and "Traceback" in out.err


def test_policy_classifies_library_errors():
    import botocore.exceptions
    import ray.exceptions

    from cluster.serving.types import PartialResultError, ServiceUnavailableError, SearchResult

    assert exit_code(ValueError("x")) == exit_code(FileNotFoundError("x")) == 2
    assert exit_code(PermissionError("x")) == exit_code(IsADirectoryError("x")) == 2
    assert exit_code(botocore.exceptions.EndpointConnectionError(endpoint_url="http://x")) == 1
    assert exit_code(botocore.exceptions.NoCredentialsError()) == 1
    assert exit_code(ServiceUnavailableError("x")) == exit_code(ConnectionError("x")) == 1
    assert exit_code(ray.exceptions.GetTimeoutError("x")) == 1
    assert exit_code(ray.exceptions.RaySystemError("x")) == 1
    assert exit_code(OSError(28, "No space left on device")) == 1
    from shards import PublishConflict
    assert exit_code(PublishConflict("v000003 was published first")) == 1   # run again
    empty = np.zeros((1, 1), dtype=np.float32)
    assert exit_code(PartialResultError(SearchResult(empty, empty.astype(np.int64), "v1",
                                                     (0,)))) == 1
    assert exit_code(KeyError("a bug")) is None      # bugs keep their traceback
    remote = ray.exceptions.RayTaskError("train", "Traceback ...\n  remote lines",
                                         ValueError("source.uri: bad"))
    for exc in (remote, remote.as_instanceof_cause()):   # what a Ray task raised decides
        assert exit_code(exc) == 2
        assert one_line("snapline build", exc) == "snapline build: error: source.uri: bad"


def test_unreadable_config_is_one_line(tmp_path, monkeypatch, capsys):
    from pathlib import Path

    path = tmp_path / "build.yaml"
    path.write_text("name: t\n")

    def forbidden(self, *_, **__):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_text", forbidden)   # root reads a chmod 000 file anyway
    assert main(["build", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"snapline build: error: {path}: cannot read the build config (Permission denied)"


def test_lease_refuses_a_ttl_that_lets_two_holders_in(tmp_path):
    root = Store(str(tmp_path / "store")).index("idx")
    for ttl in (-5, 0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="ttl_s must be finite seconds > 0"):
            Lease(root, ttl_s=ttl)
    first, second = Lease(root, ttl_s=60), Lease(root, ttl_s=60)
    assert first.acquire() and not second.acquire()
