"""`snapline train` writes a model version that VLQIndex can use."""
import json

import numpy as np
import pytest

from cluster.cli import main
from indexer import VLQIndex
from shards import write_vectors


@pytest.fixture()
def learn_file(small_data, tmp_path):
    path = str(tmp_path / "learn.fbin")
    write_vectors(path, small_data["learn"][:3000])
    return path


def test_train_writes_a_model_version(learn_file, small_data, tmp_path, capsys):
    store = str(tmp_path / "store")
    code = main(["train", "--learn", learn_file, "--store", store, "--nlist", "16",
                 "--nedge", "4", "--code-bytes", "8", "--nlambda", "32", "--encoder", "opq"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    version = out["model_version"]
    assert out["encoder"]["kind"] == "opq"
    meta = json.loads((tmp_path / "store" / "models" / version / "meta.json").read_text())
    assert meta["meta"]["training"]["sample"]["rows"] == 3000
    index = VLQIndex.from_model(store, version)
    assert index.encoder.kind == "opq" and index.ntotal == 0
    index.add(small_data["base"][:2000])
    _, ids = index.search(small_data["base"][:5], k=1, nprobe=16, nlines=64)
    assert (ids[:, 0] == np.arange(5)).mean() >= 0.8
    # the same trained model publishes under the same (content-addressed) version
    assert index.save_model(store) == version


def test_train_refuses_bad_input_before_training(learn_file, tmp_path, capsys):
    store = str(tmp_path / "store")
    assert main(["train", "--learn", learn_file, "--store", store, "--nlist", "16",
                 "--code-bytes", "8", "--encoder", "gsl+smh1.5"]) == 2
    assert "smh_fraction must lie in (0, 1]" in capsys.readouterr().err
    assert main(["train", "--learn", learn_file, "--store", store, "--nlist", "16",
                 "--code-bytes", "7", "--encoder", "none"]) == 2
    assert "code_bytes=7 must divide" in capsys.readouterr().err
    assert not (tmp_path / "store").exists()
