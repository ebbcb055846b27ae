"""Each operation checks once: a re-encode verifies the model (every checksum) and opens
each source once before it starts; a build with a model likewise. Counted by wrappers
around the real functions (nothing is replaced)."""
import collections

import pytest

import cluster.build.pipeline
import cluster.updates.reencode
import cluster.updates.reencode_plan
from cluster.build.pipeline import check_build, memory_needs
from cluster.build.config import build_config_from_dict
from cluster.estimate import refuse_unless_fits
from cluster.updates.reencode import ReencodeRequest, check_reencode
from cluster.updates.reencode_plan import reencode_memory
from shards import Store, publish, write_vectors


@pytest.fixture()
def calls(monkeypatch):
    """Counts of load_model and open_vectors calls made by the cluster layer."""
    counts = collections.Counter()
    for module in (cluster.build.pipeline, cluster.updates.reencode,
                   cluster.updates.reencode_plan):
        for name in ("load_model", "open_vectors"):
            if not hasattr(module, name):
                continue
            original = getattr(module, name)

            def counted(*args, _original=original, _name=name, **kwargs):
                counts[_name] += 1
                return _original(*args, **kwargs)

            monkeypatch.setattr(module, name, counted)
    return counts


@pytest.fixture()
def published(tmp_path, trained_index, small_data):
    source = tmp_path / "base.fbin"
    write_vectors(str(source), small_data["base"])
    store = str(tmp_path / "store")
    manifest = publish(Store(store).index("idx"), trained_index.to_arrays(), rows_per_shard=8000,
                       source={"uri": str(source), "rows": small_data["base"].shape[0],
                               "rows_per_shard": 8000})
    return store, manifest


def test_check_reencode_verifies_the_model_and_opens_the_source_once(published, calls):
    store, manifest = published
    checked = check_reencode(ReencodeRequest(store, "idx", model=manifest.model_version))
    assert calls == {"load_model": 1, "open_vectors": 1}     # one source for its 3 shards
    plan = checked.plan
    assert plan.model_version == manifest.model_version and checked.manifest == manifest
    assert (plan.shape.dim, plan.shape.nlist, plan.shape.nedge) == (32, 32, 8)
    # a single-process publish with a source: id == source row, the whole source
    assert [(s.shard, s.row_start, s.row_stop) for s in plan.inputs] == \
        [(0, 0, 20000), (1, 0, 20000), (2, 0, 20000)]
    assert {s.source["uri"] for s in plan.inputs} == {manifest.source["uri"]}
    needs = reencode_memory(plan, workers=3)
    assert [n.part for n in needs] == ["encode workers"]
    with pytest.raises(ValueError, match=r"re-encode of idx does not fit: encode workers: "
                                         r"required 1\.\d GB vs available 1\.0 GB"):
        refuse_unless_fits(needs, 1.0e9, "re-encode of idx")


def test_check_build_with_a_model_checks_it_once(published, calls):
    store, manifest = published
    cfg = build_config_from_dict({"name": "other", "store": store, "model": manifest.model_version,
                                  "source": {"uri": manifest.source["uri"]}})
    checked = check_build(cfg)
    assert calls == {"load_model": 1, "open_vectors": 1}
    assert checked.shape.code_bytes == 8 and checked.shape.nlambda == 64


def test_a_build_that_does_not_fit_is_refused_naming_the_part(published):
    store, manifest = published
    cfg = build_config_from_dict({"name": "t", "store": store, "source": manifest.source["uri"],
                                  "sample": {"size": 5000}, "index": {"nlist": 16, "nedge": 4,
                                                                      "code_bytes": 8},
                                  "workers": {"encode": 3}})
    needs = memory_needs(check_build(cfg))
    assert [n.part for n in needs] == ["trainer", "encode workers"]
    with pytest.raises(ValueError, match=r"trainer: required .* GB vs available 0\.1 GB"):
        refuse_unless_fits(needs, 0.1e9)
    with pytest.raises(ValueError, match=r"encode workers: required 1\.\d GB vs available 1\.0 GB"):
        refuse_unless_fits(needs, 1.0e9)
