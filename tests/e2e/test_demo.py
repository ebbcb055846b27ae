"""The README's main job, end to end: local Ray, local store, bundled data."""
import pytest

from cluster.demo import DemoConfig, run_demo
from shards import Store


@pytest.mark.slow
def test_demo_publishes_and_answers(tmp_path):
    store = str(tmp_path / "store")
    result = run_demo(DemoConfig(store=store))
    assert result["ntotal"] == 20000
    assert Store(store).index("sift-small").current_version() == result["version"] == "v000001"
    # R@10 on real SIFT with 16-byte codes; a broken index or ground truth lands far lower
    assert result["recall@10"] > 0.85
    assert result["qps"] > 0
