"""Serving commands: `snapline serve`, `search`, `status`, `stop`."""
from __future__ import annotations

import json


def _serve(args) -> int:
    from cluster.serving.coordinator import start_service
    from cluster.serving.types import ServeConfig

    cfg = ServeConfig(store=args.store, name=args.name, searchers=args.searchers,
                      replicas=args.replicas, timeout_s=args.timeout_s, poll_s=args.poll_s,
                      searcher_cpus=args.searcher_cpus, searcher_gpus=args.searcher_gpus,
                      searcher_threads=args.searcher_threads,
                      **{f: getattr(args, f) for f in ("batch_window_ms", "batch_max_queries",
                                                       "http_port", "http_host")
                         if getattr(args, f) is not None})
    stats = start_service(cfg, args.address)
    print(json.dumps(stats, indent=1))
    print(f"snapline serve: {cfg.name} version {stats['version']} ready: {stats['shards']} "
          f"shards on {stats['searchers']} searchers x {stats['replicas']} replicas")
    return 0


def _search(args) -> int:
    import numpy as np

    from cluster.client import Client
    from shards import open_vectors

    reader = open_vectors(args.queries)
    queries = reader.read(0, min(reader.n, args.limit) if args.limit else reader.n)
    client = Client.connect(args.name, address=args.address)
    result = client.search(queries, k=args.k, nprobe=args.nprobe, nlines=args.nlines,
                           rerank=args.rerank, filter=args.filter, refine=args.refine,
                           on_partial=args.on_partial, timeout_s=args.timeout_s)
    if args.out:
        np.savez(args.out, distances=result.distances, ids=result.ids)
    print(json.dumps({"version": result.version, "queries": int(queries.shape[0]),
                      "k": args.k, "missing_shards": list(result.missing_shards),
                      "ids_head": result.ids[:3].tolist(), "out": args.out}, indent=1))
    return 0


def _status(args) -> int:
    from cluster.client import Client

    print(json.dumps(Client.connect(args.name, address=args.address).stats(), indent=1))
    return 0


def _stop(args) -> int:
    from cluster.serving.coordinator import stop_service

    stop_service(args.name, args.address)
    print(f"snapline stop: {args.name} stopped")
    return 0


def _add_serve_parser(sub):
    serve = sub.add_parser("serve", help="start the detached query coordinator and shard "
                           "searchers of a published index on the current Ray cluster")
    serve.add_argument("--store", required=True, help="store URI (local path or s3://...)")
    serve.add_argument("--name", required=True, help="index name (its CURRENT version is served)")
    serve.add_argument("--searchers", type=int, default=1, help="shard groups (one searcher "
                       "per group and replica)")
    serve.add_argument("--replicas", type=int, default=1, help="searchers holding each group")
    serve.add_argument("--timeout-s", type=float, default=10.0, help="default query timeout")
    serve.add_argument("--poll-s", type=float, default=5.0, help="CURRENT check period "
                       "(0: reload only on request)")
    serve.add_argument("--searcher-cpus", type=float, default=0.0)
    serve.add_argument("--searcher-gpus", type=float, default=0.0)
    serve.add_argument("--searcher-threads", type=int, default=None, help="scan threads per "
                       "searcher (default: all cores; searchers on one machine share them)")
    serve.add_argument("--batch-window-ms", type=float, default=None, help="concurrent "
                       "requests with the same parameters gather this long at most while a "
                       "batch of theirs is in flight (default 3; 0: no batching)")
    serve.add_argument("--batch-max-queries", type=int, default=None, help="queries per "
                       "gathered fan-out at most (default 256)")
    serve.add_argument("--http-port", type=int, default=None, help="also serve JSON over "
                       "HTTP on this port (POST /v1/search, GET /v1/stats; 0: a free port)")
    serve.add_argument("--http-host", default=None, help="address the HTTP endpoint binds "
                       "(default 127.0.0.1)")
    serve.set_defaults(func=_serve)
    return serve


def _add_search_parser(sub):
    search = sub.add_parser("search", help="query a running service with a vector file")
    search.add_argument("--name", required=True)
    search.add_argument("--queries", required=True, help="query vectors (any supported format)")
    search.add_argument("--limit", type=int, default=None, help="first N queries only")
    search.add_argument("--k", type=int, default=10)
    search.add_argument("--nprobe", type=int, default=32)
    search.add_argument("--nlines", type=int, default=256)
    search.add_argument("--rerank", type=int, default=None, help="codes re-ranked with exact "
                        "ADC per query and shard (default: the index's)")
    search.add_argument("--filter", default=None, help="SQL WHERE clause over the attribute "
                        "columns, e.g. \"lang = 'en' AND year >= 2020\"")
    search.add_argument("--refine", type=int, default=None, help="candidates (>= k) re-ranked "
                        "by the exact distance to the stored vectors")
    search.add_argument("--timeout-s", type=float, default=None)
    search.add_argument("--on-partial", choices=("raise", "partial"), default="raise")
    search.add_argument("--out", default=None, help=".npz file for distances and ids")
    search.set_defaults(func=_search)
    return search


def add_serving_commands(sub) -> None:
    serve, search = _add_serve_parser(sub), _add_search_parser(sub)
    status = sub.add_parser("status", help="stats of a running service (JSON)")
    status.add_argument("--name", required=True)
    status.set_defaults(func=_status)

    stop = sub.add_parser("stop", help="stop a running service: searchers and coordinator")
    stop.add_argument("--name", required=True)
    stop.set_defaults(func=_stop)

    for cmd in (serve, search, status, stop):
        cmd.add_argument("--address", default="auto", help="Ray cluster address (default: "
                         "auto; with `ray start` token auth set RAY_AUTH_MODE=token)")
