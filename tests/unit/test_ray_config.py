"""ray_config.yaml is valid against the cluster-config schema that ships inside ray."""
import copy
import json
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

CONFIG = Path(__file__).resolve().parents[2] / "ray_config.yaml"
SCHEMA = Path(ray.__file__).parent / "autoscaler" / "ray-schema.json"


@pytest.fixture(scope="module")
def config():
    return yaml.safe_load(CONFIG.read_text())


@pytest.fixture(scope="module")
def schema():
    return json.loads(SCHEMA.read_text())


def test_ray_config_validates_against_ray_schema(config, schema):
    jsonschema.validate(config, schema)
    assert config["head_node_type"] in config["available_node_types"]
    gpu_nodes = [t for t in config["available_node_types"].values()
                 if t["resources"].get("GPU", 0) > 0]
    assert gpu_nodes, "the config must offer GPU workers"
    assert config["file_mounts"], "the repository must be synced to the nodes"


@pytest.mark.parametrize("break_it", [
    lambda c: c["available_node_types"]["worker.gpu"].update(min_workerz=1),
    lambda c: c.update(max_workers="eight"),
    lambda c: c["provider"].pop("type"),
])
def test_schema_check_rejects_a_broken_config(config, schema, break_it):
    broken = copy.deepcopy(config)
    break_it(broken)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_every_node_starts_with_token_authentication(config):
    """Authentication stays on in the cluster the launcher makes: the token is copied to
    every node and every `ray start` runs with RAY_AUTH_MODE=token."""
    assert "/home/ubuntu/.ray/auth_token" in config["file_mounts"]
    starts = [c for key in ("head_start_ray_commands", "worker_start_ray_commands")
              for c in config[key] if "ray start" in c]
    assert len(starts) == 2 and all("RAY_AUTH_MODE=token" in c for c in starts)
