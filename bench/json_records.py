"""JSON records of benchmark runs: written atomically (a temp file, then os.replace)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

__all__ = ["read_json", "write_json"]


def write_json(obj: Any, path: str | Path, default: Callable[[Any], Any] | None = None) -> Path:
    """Write obj as indented JSON at path (parents created); a reader never sees half a file.

    ``default`` is json.dumps' hook for values JSON has no type for (e.g. ``str``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=default))
    os.replace(tmp, path)
    return path


def read_json(path: str | Path) -> Any:
    """The JSON document at path; a missing file is FileNotFoundError naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no results file {path}")
    try:
        return json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a JSON document ({type(exc).__name__}: {exc})") from None
