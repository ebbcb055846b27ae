"""The exit-status policy of `snapline` (cluster.cli.main), `python -m cluster.build` and
`python -m cluster.live`.

    0  done
    2  bad input: the argument, key or file is named in one line (ValueError and its
       subclasses such as BuildConfigError, a missing, unreadable or wrong-kind file)
    1  an environmental failure, in one line: an unreachable store (StoreUnavailableError,
       botocore's connection and credential errors), no Ray cluster or a Ray failure
       (ConnectionError, ray.exceptions.RayError), a service that did not answer
       (ServiceUnavailableError, PartialResultError), another writer that changed the
       index first (shards.PublishConflict: nothing was published, run it again), a
       full disk or another OSError

Anything else is a bug and keeps its traceback. `-v` prints the traceback of the
classified failures too.
"""
from __future__ import annotations

import argparse
import sys
import traceback
from typing import Callable

__all__ = ["BAD_INPUT", "ENVIRONMENT", "OneLineArgumentParser", "exit_code", "one_line",
           "run_guarded"]

BAD_INPUT = 2
ENVIRONMENT = 1
_BAD_INPUT_TYPES = (ValueError, FileNotFoundError, IsADirectoryError, NotADirectoryError,
                    PermissionError)
_ENVIRONMENT_MODULES = ("botocore", "aiobotocore", "urllib3", "requests", "grpc")


def _ray_error(exc: BaseException) -> bool:
    ray_exceptions = sys.modules.get("ray.exceptions")   # no Ray import when Ray never ran
    return ray_exceptions is not None and isinstance(exc, ray_exceptions.RayError)


def _cause(exc: BaseException) -> BaseException:
    """What a Ray task raised, for a RayTaskError (its own text is a remote traceback)."""
    cause = getattr(exc, "cause", None)
    return cause if _ray_error(exc) and isinstance(cause, BaseException) else exc


def exit_code(exc: BaseException) -> int | None:
    """2 (bad input), 1 (environment) or None (a bug: let it raise)."""
    from cluster.serving.types import PartialResultError
    from shards.commit import PublishConflict

    exc = _cause(exc)
    if isinstance(exc, _BAD_INPUT_TYPES):
        return BAD_INPUT
    if isinstance(exc, (ConnectionError, TimeoutError, PartialResultError, OSError,
                        PublishConflict)):
        return ENVIRONMENT
    if _ray_error(exc) or type(exc).__module__.split(".")[0] in _ENVIRONMENT_MODULES:
        return ENVIRONMENT
    return None


def one_line(prog: str, exc: BaseException) -> str:
    """`PROG: error: MESSAGE` (bad input) or `PROG: TYPE: MESSAGE` (environment), the
    message's lines and runs of spaces folded into one line."""
    code, exc = exit_code(exc), _cause(exc)
    text = " ".join(str(exc).split()) or repr(exc)
    return f"{prog}: {'error' if code == BAD_INPUT else type(exc).__name__}: {text}"


def run_guarded(prog: str, call: Callable[[], int], verbose: bool = False) -> int:
    """call() under the policy: its status, or 2 / 1 and one stderr line; a bug raises."""
    try:
        return call()
    except Exception as exc:  # noqa: BLE001 - classified here; an unclassified one re-raises
        code = exit_code(exc)
        if code is None:
            raise
        if verbose:
            traceback.print_exc()
        print(one_line(prog, exc), file=sys.stderr)
        return code


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse with a one-line error (`snapline CMD: error: argument --x: ...`, exit 2)
    instead of the usage block; `--help` still prints the usage."""

    def error(self, message: str):
        self.exit(BAD_INPUT, f"{self.prog}: error: {' '.join(message.split())}\n")
