"""cluster/ has no import circle (functions' imports included), and `python -m
cluster.build` is its own entry: it parses its arguments and refuses a bad config
before Ray starts, without the CLI."""
import ast
import os
from pathlib import Path

import yaml

CLUSTER = Path(__file__).resolve().parents[2] / "cluster"


def _cluster_imports() -> dict[str, set[str]]:
    graph = {}
    for path in CLUSTER.glob("*.py"):
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cluster"):
                deps |= ({node.module} if node.module != "cluster"
                         else {f"cluster.{a.name}" for a in node.names})
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("cluster.")}
        graph[f"cluster.{path.stem}"] = deps
    return graph


def test_no_import_circle_in_cluster():
    graph = _cluster_imports()

    def reaches(start: str, target: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            for dep in graph.get(todo.pop(), ()):
                if dep == target:
                    return True
                if dep not in seen:
                    seen.add(dep)
                    todo.append(dep)
        return False

    circles = [m for m in graph if reaches(m, m)]
    assert circles == []
    assert "cluster.cli" not in graph["cluster.build"]


def test_python_m_cluster_build_refuses_a_bad_config_before_ray(tmp_path, capsys):
    from cluster.build import main

    assert main(["--config", str(tmp_path / "no.yaml")]) == 2
    assert "no such build config" in capsys.readouterr().err
    path = tmp_path / "build.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "store": str(tmp_path / "store"),
                                    "source": {"uri": str(tmp_path / "missing.fbin")}}))
    assert main(["--config", str(path)]) == 2
    assert "source.uri" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "store")
