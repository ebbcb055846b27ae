"""`snapline fsck --store S [--name N] [--repair]`: check a store (shards.fsck.fsck).

One line per finding on stdout, a summary on stderr. Exit 0 clean (or every orphan
removed by --repair), 1 problems or orphans left, 2 bad arguments (a missing store or
index, a bad name or protocol); an unreachable store is 1 with one line.
"""
from __future__ import annotations

import sys


def _fsck(args) -> int:
    from shards.fsck import fsck

    if args.min_age is not None and not args.min_age >= 0:
        raise ValueError(f"--min-age must be >= 0 seconds, got {args.min_age}")
    extra = {} if args.min_age is None else {"min_age_s": args.min_age}
    try:
        report = fsck(args.store, args.name, repair=args.repair, **extra)
    except FileNotFoundError:
        raise                                    # a missing store or index: exit 2
    except ConnectionError as exc:               # names the store already
        print(f"snapline fsck: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:                       # no permission, an I/O error
        print(f"snapline fsck: {args.store}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    removed = set(report.removed)
    for finding in report.findings:
        note = " [removed]" if finding.uri in removed else \
            " [kept: younger than --min-age]" if finding.uri in report.kept else ""
        print(f"{finding}{note}")
    left = [f for f in report.findings if f.uri not in removed]
    print(f"snapline fsck: {report.checked_versions} versions verified, "
          f"{sum(f.kind == 'problem' for f in report.findings)} problems, "
          f"{sum(f.kind == 'orphan' for f in report.findings)} orphans, "
          f"{len(removed)} removed", file=sys.stderr)
    return 1 if left else 0


def add_fsck_commands(sub) -> None:
    fsck = sub.add_parser("fsck", help="verify every index version (manifest, model, shard "
                          "checksums) and list orphans; --repair removes the orphans")
    fsck.add_argument("--store", required=True, help="store URI (local folder or s3://...)")
    fsck.add_argument("--name", default=None, help="only this index (default: every index "
                      "and every model)")
    fsck.add_argument("--repair", action="store_true", help="remove orphans that no manifest "
                      "references (never CURRENT's version, never the live lease)")
    fsck.add_argument("--min-age", type=float, default=None, metavar="SECONDS",
                      help="--repair leaves orphans younger than this alone (default 3600: "
                      "a publish or build may be writing them)")
    fsck.set_defaults(func=_fsck)
