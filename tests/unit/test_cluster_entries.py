"""`python -m cluster.build` is its own entry: it parses its arguments and refuses a bad config
before Ray starts, without the CLI."""
import ast
import os
from pathlib import Path

import yaml

CLUSTER = Path(__file__).resolve().parents[2] / "cluster"


def test_the_build_entry_does_not_import_the_cli():
    """(No import circle anywhere in cluster/: tests/unit/test_architecture.py.)"""
    for path in (CLUSTER / "build").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.startswith("cluster.cli") for n in names), path


def test_python_m_cluster_build_refuses_a_bad_config_before_ray(tmp_path, capsys):
    from cluster.build.pipeline import main

    assert main(["--config", str(tmp_path / "no.yaml")]) == 2
    assert "no such build config" in capsys.readouterr().err
    path = tmp_path / "build.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "store": str(tmp_path / "store"),
                                    "source": {"uri": str(tmp_path / "missing.fbin")}}))
    assert main(["--config", str(path)]) == 2
    assert "source.uri" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "store")
