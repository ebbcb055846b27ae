"""Live index commands: `snapline append`, `delete`, `compact` (cluster.live), and
`python -m cluster.live append|delete|compact ...`, the same commands as the entry
`ray job submit` runs (`live_main`). Each prints its summary as JSON, then one line."""
from __future__ import annotations

import logging

from cluster.build.pipeline import print_summary
from cluster.exit_status import OneLineArgumentParser, run_guarded


def _print(summary: dict, line: str, summary_json: str | None) -> int:
    print_summary(summary, summary_json, line)
    return 0


def _append(args) -> int:
    from cluster.live.append import AppendRequest, append, summary_line

    summary = append(AppendRequest(
        store=args.store, name=args.name, source=args.source, format=args.format,
        column=args.column, ids=args.ids, attributes=args.attributes, workers=args.workers,
        cpus_per_worker=args.cpus_per_worker, gpus_per_worker=args.gpus_per_worker),
        args.address)
    return _print(summary, summary_line(summary), args.summary_json)


def _delete(args) -> int:
    from cluster.live.jobs import delete, delete_line

    summary = delete(args.store, args.name, args.ids)
    return _print(summary, delete_line(summary), args.summary_json)


def _compact(args) -> int:
    from cluster.live.jobs import compact, compact_line

    if not 0.0 <= args.min_deleted <= 1.0:
        raise ValueError(f"--min-deleted must be a fraction in [0, 1], got {args.min_deleted}")
    for flag, value in (("--max-shards", args.max_shards),
                        ("--rows-per-shard", args.rows_per_shard)):
        if value is not None and value < 1:
            raise ValueError(f"{flag} must be >= 1, got {value}")
    summary = compact(args.store, args.name, args.min_deleted, args.max_shards,
                      args.rows_per_shard)
    return _print(summary, compact_line(summary), args.summary_json)


def _common(p) -> None:
    p.add_argument("--store", required=True, help="store URI (local folder or s3://...)")
    p.add_argument("--name", required=True, help="a published index of the store")
    p.add_argument("--summary-json", default=None, help="also write the summary here")


def add_live_commands(sub) -> None:
    append = sub.add_parser("append", help="encode new vectors with the index's current model "
                            "on Ray and publish them as a new version (old shards kept)")
    _common(append)
    append.add_argument("--source", required=True, help="vector file (.fbin/.u8bin/.i8bin/"
                        ".npy/.*vecs, or Parquet with a vector column), local or s3://")
    append.add_argument("--format", default=None, help="the source's format (default: from "
                        "its extension)")
    append.add_argument("--column", default=None, help="the vector column of a Parquet source")
    append.add_argument("--ids", default=None, help="ids, one per source row: .npy (one "
                        "integer column) or .parquet (column 'id'); default next_id, "
                        "next_id+1, ...")
    append.add_argument("--attributes", default=None, help="Parquet table of the index's "
                        "attribute columns: one row per source row in order, or keyed by an "
                        "'id' column (default: a Parquet source's columns of those names)")
    append.add_argument("--workers", type=int, default=2, help="encode actors")
    append.add_argument("--cpus-per-worker", type=float, default=1.0)
    append.add_argument("--gpus-per-worker", type=float, default=0.0)
    append.add_argument("--address", default=None, help="Ray cluster address (default: the "
                        "job's cluster under `ray job submit`, RAY_ADDRESS, else a new local Ray)")
    append.set_defaults(func=_append)

    delete = sub.add_parser("delete", help="delete ids: a new version with a tombstone set "
                            "(shards kept; unknown ids ignored)")
    _common(delete)
    delete.add_argument("--ids", required=True, help="ids to delete: .npy (one integer "
                        "column) or .parquet (column 'id')")
    delete.set_defaults(func=_delete)

    compact = sub.add_parser("compact", help="rewrite shards heavy with deleted rows and merge "
                             "small ones into a new version")
    _common(compact)
    compact.add_argument("--min-deleted", type=float, default=0.2, help="rewrite a shard when "
                         "at least this fraction of its rows is deleted (default 0.2)")
    compact.add_argument("--max-shards", type=int, default=None, help="merge until at most "
                         "this many shards")
    compact.add_argument("--rows-per-shard", type=int, default=None, help="the target shard "
                         "size (default: the index's)")
    compact.set_defaults(func=_compact)


def live_main(argv: list[str] | None = None) -> int:
    """`python -m cluster.live append|delete|compact ...`: exit status and error line as
    `snapline` (cluster.exit_status)."""
    parser = OneLineArgumentParser(prog="python -m cluster.live",
                                   description="append, delete, compact a live index")
    parser.add_argument("-v", "--verbose", action="store_true", help="tracebacks too")
    add_live_commands(parser.add_subparsers(dest="command", required=True))
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run_guarded(f"python -m cluster.live {args.command}", lambda: args.func(args),
                       args.verbose)
