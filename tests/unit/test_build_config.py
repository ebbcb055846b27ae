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


@pytest.mark.parametrize("overrides, key", [
    ({"workers": {"cpus_per_worker": float("nan")}}, "workers.cpus_per_worker"),
    ({"workers": {"gpus_per_worker": float("inf")}}, "workers.gpus_per_worker"),
    ({"workers": {"train_gpus": float("-inf")}}, "workers.train_gpus"),
    ({"encoder": {"kind": "gsl", "lr": float("nan")}}, "encoder.lr"),
])
def test_non_finite_numbers_are_refused(tmp_path, source, overrides, key):
    with pytest.raises(BuildConfigError, match=key.replace(".", r"\.") + ": must be a finite"):
        build_config_from_dict(config(tmp_path, source, **overrides))


def test_yaml_nan_and_inf_are_refused_before_ray(tmp_path, source, capsys):
    path = tmp_path / "build.yaml"
    text = yaml.safe_dump(config(tmp_path, source))
    path.write_text(text.replace("  encode: 2\n", "  encode: 2\n  cpus_per_worker: .nan\n"))
    assert main(["build", "--config", str(path)]) == 2
    assert "workers.cpus_per_worker: must be a finite number, got nan" in capsys.readouterr().err


def test_configs_made_in_python_are_checked_too():
    from cluster.build.config import BuildConfig, SourceConfig, WorkersConfig

    with pytest.raises(BuildConfigError, match="workers.gpus_per_worker: must be a finite"):
        BuildConfig("t", "/tmp/s", SourceConfig("x.fbin"),
                    workers=WorkersConfig(gpus_per_worker=float("inf")))


def test_nedge_against_nlist(tmp_path, source):
    """A given nedge must be below a given nlist (VLQIndex refuses it too); an omitted nedge
    is 32 capped at nlist - 1, and with nlist auto any nedge is capped (documented)."""
    with pytest.raises(BuildConfigError, match=r"index\.nedge: must be < index\.nlist"):
        build_config_from_dict(config(tmp_path, source, index={"nlist": 8, "nedge": 8}))
    omitted = config(tmp_path, source)
    omitted["index"] = {"nlist": 8, "code_bytes": 4}
    checked = check_build(build_config_from_dict(omitted))
    assert (checked.nlist, checked.nedge, checked.shape.nedge) == (8, 7, 7)
    auto = config(tmp_path, source, index={"nlist": "auto", "nedge": 64})
    checked = check_build(build_config_from_dict(auto))
    assert checked.nedge == checked.nlist - 1 < 64


def test_config_that_is_a_folder_or_not_text_is_one_line(tmp_path, capsys):
    (tmp_path / "binary.yaml").write_bytes(b"\xff\xfe\x00garbage")
    for path, says in ((tmp_path, "is a folder"), (tmp_path / "binary.yaml", "not a text")):
        assert main(["build", "--config", str(path)]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and f"{path}: {says}" in err


def test_unknown_store_protocol_is_refused_naming_the_key(tmp_path, source):
    cfg = build_config_from_dict(config(tmp_path, source, store="foo://bucket/x"))
    with pytest.raises(BuildConfigError, match="store foo://bucket/x: unsupported storage "
                                               "protocol 'foo'"):
        check_build(cfg)
