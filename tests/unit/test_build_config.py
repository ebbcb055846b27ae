"""build.yaml: a typed schema; bad configs fail before any work with the key named."""
import os

import numpy as np
import pytest
import yaml

from cluster.build.pipeline import check_build
from cluster.build.config import BuildConfigError, build_config_from_dict, load_build_config
from cluster.cli import main
from shards import write_vectors


@pytest.fixture()
def source(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "base.fbin"
    write_vectors(str(path), rng.normal(size=(2000, 16)).astype(np.float32))
    return str(path)


def config(tmp_path, source_uri, **overrides):
    doc = {"name": "t", "store": str(tmp_path / "store"), "source": {"uri": source_uri},
           "sample": {"size": 1000, "seed": 0}, "index": {"nlist": 8, "nedge": 4, "code_bytes": 4},
           "shards": {"rows_per_shard": 500}, "workers": {"encode": 2}}
    for key, value in overrides.items():
        if value is None:
            doc.pop(key)
        elif isinstance(value, dict) and isinstance(doc.get(key), dict):
            doc[key] = {**doc[key], **value}
        else:
            doc[key] = value
    return doc


def test_valid_config_loads_with_defaults(tmp_path, source):
    path = tmp_path / "build.yaml"
    path.write_text(yaml.safe_dump(config(tmp_path, source, encoder={"kind": "opq"})))
    cfg = load_build_config(path)
    assert cfg.shards.rows_per_shard == 500 and cfg.encoder.kind == "opq"
    assert cfg.index.nlambda == 256 and cfg.workers.gpus_per_worker == 0
    checked = check_build(cfg)
    assert (checked.n_rows, checked.dim, checked.nlist) == (2000, 16, 8)


@pytest.mark.parametrize("overrides, key", [
    ({"colour": "red"}, "colour"),
    ({"shards": {"rows_per_shard": 0}}, "shards.rows_per_shard"),
    ({"shards": {"rows_per_shard": -5}}, "shards.rows_per_shard"),
    ({"shards": {"rows_per_shrd": 10}}, "shards.rows_per_shrd"),
    ({"source": None}, "source"),
    ({"source": {"uri": ""}}, "source.uri"),
    ({"workers": {"encode": "two"}}, "workers.encode"),
    ({"index": {"code_bytes": 0}}, "index.code_bytes"),
    ({"encoder": {"kind": "gsl", "beta": 1.5}}, "beta"),
    ({"encoder": {"kind": "gsl", "smh_fraction": 0.0}}, "smh_fraction"),
    ({"learn": {"uri": "x.fbin"}}, "sample and learn"),
])
def test_bad_config_names_the_key(tmp_path, source, overrides, key):
    with pytest.raises(BuildConfigError, match=key.replace(".", r"\.")):
        build_config_from_dict(config(tmp_path, source, **overrides))


def test_missing_source_file_is_refused(tmp_path, source):
    cfg = build_config_from_dict(config(tmp_path, source, source={"uri": str(tmp_path / "no.fbin")}))
    with pytest.raises(BuildConfigError, match=r"source\.uri: .*no such file"):
        check_build(cfg)


def test_dimension_mismatch_is_refused(tmp_path, source):
    learn = tmp_path / "learn.fbin"
    write_vectors(str(learn), np.zeros((100, 8), np.float32))
    cfg = build_config_from_dict(config(tmp_path, source, sample=None, learn={"uri": str(learn)}))
    with pytest.raises(BuildConfigError, match=r"learn\.uri: 8-d vectors, the source has d=16"):
        check_build(cfg)
    cfg = build_config_from_dict(config(tmp_path, source, index={"code_bytes": 5}))
    with pytest.raises(BuildConfigError, match="code_bytes=5 must divide"):
        check_build(cfg)


def test_unreadable_store_is_refused(tmp_path, source):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    cfg = build_config_from_dict(config(tmp_path, source, store=str(blocker / "store")))
    with pytest.raises(BuildConfigError, match="store: .*not writable"):
        check_build(cfg)


def test_unreadable_s3_store_is_refused(tmp_path, source, s3_endpoint):
    cfg = build_config_from_dict(config(tmp_path, source, store="s3://no-such-bucket-snapline/x"))
    with pytest.raises(BuildConfigError, match="store: s3://no-such-bucket-snapline/x"):
        check_build(cfg)


def test_missing_model_version_is_refused(tmp_path, source):
    cfg = build_config_from_dict(config(tmp_path, source, sample=None, model="m-0123456789abcdef"))
    with pytest.raises(BuildConfigError, match="model: .*m-0123456789abcdef: no meta.json"):
        check_build(cfg)


def test_cli_refuses_before_starting_ray(tmp_path, source, capsys):
    path = tmp_path / "build.yaml"
    path.write_text(yaml.safe_dump(config(tmp_path, source, shards={"rows_per_shard": 0})))
    assert main(["build", "--config", str(path)]) == 2
    assert "shards.rows_per_shard: must be > 0, got 0" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "store")


def test_shipped_example_config_is_valid():
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "cluster" / "build.example.yaml"
    cfg = load_build_config(example)
    assert cfg.name == "sift-small" and cfg.workers.encode == 2
