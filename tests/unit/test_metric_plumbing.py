"""The metric outside the scan kernels (issue 15, point 1): build config, `snapline train
--metric`, the benchmark's metric sets and runners."""
import importlib.util
import json

import numpy as np
import pytest

from bench.config import BenchConfig
from bench.dataset_files import check_dataset_metric, make_metric_set
from bench.runner import run_benchmark
from cluster.build.config import BuildConfigError, build_config_from_dict
from cluster.build.pipeline import check_build
from cluster.cli import main
from cluster.cli.model_commands import METRIC_CHOICES
from indexer import VLQIndex
from shards import read_ground_truth, write_ground_truth, write_vectors
from shards.shape import METRICS


def unit_rows(rng, n, d):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def unit_set(tmp_path_factory):
    """A unit-norm big-ann folder with l2 ground truth (like the text sets)."""
    folder = tmp_path_factory.mktemp("unit")
    rng = np.random.default_rng(0)
    base, learn, query = unit_rows(rng, 3000, 32), unit_rows(rng, 1000, 32), unit_rows(rng, 40, 32)
    for name, x in (("base", base), ("learn", learn), ("query", query)):
        write_vectors(str(folder / f"{name}.fbin"), x)
    dist = ((query[:, None] - base[None]) ** 2).sum(-1)
    ids = np.argsort(dist, axis=1, kind="stable")[:, :100]
    write_ground_truth(str(folder / "gt.ibin"), ids, np.take_along_axis(dist, ids, axis=1))
    return folder


def build_doc(tmp_path, source, **index):
    return {"name": "t", "store": str(tmp_path / "store"), "source": {"uri": source},
            "sample": {"size": 1000, "seed": 0},
            "index": {"nlist": 8, "nedge": 4, "code_bytes": 4, **index}}


def test_build_config_metric(tmp_path, unit_set):
    source = str(unit_set / "base.fbin")
    with pytest.raises(BuildConfigError, match=r"index\.metric: must be one of l2, ip, cosine, "
                                               r"got 'dot'"):
        build_config_from_dict(build_doc(tmp_path, source, metric="dot"))
    assert check_build(build_config_from_dict(build_doc(tmp_path, source))).shape.metric == "l2"
    cosine = check_build(build_config_from_dict(build_doc(tmp_path, source, metric="cosine")))
    assert cosine.shape.metric == "cosine"


def test_a_reused_model_keeps_its_metric(tmp_path, unit_set):
    model = VLQIndex(32, 8, 4, code_bytes=4, nlambda=16, metric="cosine")
    model.train(np.fromfile(unit_set / "learn.fbin", np.float32)[2:].reshape(-1, 32))
    version = model.save_model(tmp_path / "store")
    doc = {**build_doc(tmp_path, str(unit_set / "base.fbin")), "model": version}
    doc.pop("sample")
    assert check_build(build_config_from_dict(doc)).shape.metric == "cosine"
    doc["index"] = {"metric": "l2"}
    with pytest.raises(BuildConfigError, match=f"index.metric: 'l2', but model {version} was "
                                               f"trained for metric 'cosine'"):
        check_build(build_config_from_dict(doc))


def test_train_metric_flag(tmp_path, unit_set, capsys):
    assert METRIC_CHOICES == METRICS
    store = str(tmp_path / "store")
    assert main(["train", "--learn", str(unit_set / "learn.fbin"), "--store", store,
                 "--nlist", "8", "--nedge", "4", "--code-bytes", "4", "--nlambda", "16",
                 "--metric", "cosine"]) == 0
    version = json.loads(capsys.readouterr().out)["model_version"]
    index = VLQIndex.from_model(store, version)
    assert index.metric == "cosine" and index.shape.metric == "cosine"
    assert main(["train", "--learn", str(unit_set / "learn.fbin"), "--store", store,
                 "--nlist", "8", "--metric", "dot"]) != 0


def test_the_ip_set_ranks_by_inner_product(tmp_path, unit_set):
    ip = make_metric_set(unit_set, tmp_path / "ip", "ip", seed=3)
    base = np.fromfile(ip / "base.fbin", np.float32)[2:].reshape(-1, 32)
    query = np.fromfile(ip / "query.fbin", np.float32)[2:].reshape(-1, 32)
    norms = np.linalg.norm(base, axis=1)
    assert 0.5 <= norms.min() and norms.max() <= 2.0 and norms.std() > 0.2
    ids, dist = read_ground_truth(str(ip / "gt.ibin"))
    scores = query.astype(np.float64) @ base.T.astype(np.float64)
    np.testing.assert_array_equal(ids, np.argsort(-scores, axis=1, kind="stable")[:, :100])
    np.testing.assert_allclose(dist, np.take_along_axis(scores, ids, axis=1), rtol=1e-5)
    l2_ids, _ = read_ground_truth(str(unit_set / "gt.ibin"))
    assert (ids[:, 0] != l2_ids[:, 0]).mean() > 0.3          # IP order is not L2 order
    check_dataset_metric(ip, "ip")
    with pytest.raises(ValueError, match="gt.ibin is for metric 'ip', the benchmark asks for "
                                         "'l2'"):
        check_dataset_metric(ip, "l2")
    check_dataset_metric(unit_set, "cosine")   # unit-norm rows: l2 order is cosine order
    assert make_metric_set(unit_set, tmp_path / "ip", "ip", seed=3) == ip   # kept
    with pytest.raises(ValueError, match="metric must be 'l2', 'ip' or 'cosine'"):
        BenchConfig(data_dir=ip, out_dir=tmp_path / "out", metric="dot")


PEERS = ("ivfpq",) + tuple(system for system, package in (("lancedb_ivfpq", "lancedb"),
                                                           ("scann", "scann"))
                           if importlib.util.find_spec(package) is not None)


@pytest.mark.parametrize("metric, systems", [("cosine", ("snapline",) + PEERS), ("ip", PEERS)])
def test_bench_runs_every_system_by_the_metric(tmp_path, unit_set, metric, systems):
    folder = make_metric_set(unit_set, tmp_path / metric, metric)
    cfg = BenchConfig(data_dir=folder, out_dir=tmp_path / "out", code_bytes=8, threads=1,
                      nedges=(4,), nlambda=16, systems=systems, repeats=1,
                      nlist_vlq=8, ivf_nlist=16, pq_bits=(8,), metric=metric)
    results = run_benchmark(cfg)
    assert results["metric"] == metric and results["dataset_metric"]["metric"] == metric
    assert not results["failed"] and {r["system"] for r in results["runs"]} == set(systems)
    for run in results["runs"]:   # ranked by the metric: far above chance (10 / 3000)
        assert max(p["recall@10"] for p in run["search"]) > 0.5, run["index"]
