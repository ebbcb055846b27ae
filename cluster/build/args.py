"""The build job's command-line arguments, shared by `python -m cluster.build` and
`snapline build` (a module of its own so that the CLI does not import the build, Ray
and torch to parse its arguments)."""
from __future__ import annotations

import argparse


def add_build_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--config", required=True, help="build.yaml")
    parser.add_argument("--address", default=None, help="Ray cluster address (default: the "
                        "job's cluster under `ray job submit`, RAY_ADDRESS, else a new local Ray)")
    parser.add_argument("--summary-json", default=None, help="also write the summary here")
    return parser
