"""`snapline` command line: one subcommand per capability, each calling its library entry."""
from __future__ import annotations

import argparse
import json
import logging
import sys

from cluster.build_args import add_build_arguments


def _bench(args) -> int:
    from bench.config import BenchConfig
    from bench.plotting import plot_results
    from bench.runner import RESULTS_FILE, run_benchmark

    systems = tuple(args.systems.split(",")) if args.systems else None
    cfg = BenchConfig(data_dir=args.data_dir, out_dir=args.out, code_bytes=args.code_bytes,
                      **({"threads": args.threads} if args.threads else {}),
                      **({"systems": systems} if systems else {}),
                      **({"nlist_vlq": args.nlist} if args.nlist else {}),
                      encoders=tuple(args.encoder or ["none"]), nedge=args.nedge)
    results = run_benchmark(cfg)
    png = plot_results(cfg.out_dir / RESULTS_FILE)   # the plot step reads the file on disk
    for run in results["runs"]:
        best = max(run["search"], key=lambda p: p["recall@10"])
        print(f"{run['index']:<40} bytes/vec {run['bytes_per_vector']:5.1f}  "
              f"best R@10 {best['recall@10']:.3f} at {best['qps']:.0f} QPS")
    print(f"wrote {cfg.out_dir}/{RESULTS_FILE} and {png}")
    return 0


def _plot(args) -> int:
    from bench.plotting import plot_results

    print(f"wrote {plot_results(args.results_json, args.out)}")
    return 0


def _train(args) -> int:
    if args.name:
        return _train_for_index(args)
    if not args.learn or not args.nlist:
        raise ValueError("give --name (a new model for a published index, from a fresh sample "
                         "of its source) or --learn and --nlist (a model from a vector file)")
    from indexer import VLQIndex
    from shards import Store, open_vectors
    from shards.shape import IndexShape
    from trainers.train_encoder import encoder_config_from_spec, train_encoder

    learn = open_vectors(args.learn)
    encoder_cfg = encoder_config_from_spec(args.encoder, seed=args.seed)
    shape = IndexShape(learn.d, args.nlist, min(args.nedge, args.nlist - 1), args.code_bytes,
                       args.nlambda, encoder=encoder_cfg.kind, code_dim=encoder_cfg.dim_out)
    rows = learn.read(0, min(learn.n, args.sample_size)) if args.sample_size else learn.read()
    encoder, quantizer, metrics = train_encoder(rows, shape, encoder_cfg)
    index = VLQIndex.from_trained(encoder, quantizer)
    version = index.save_model(Store(args.store), extra_meta={
        "training": {"sample": {"uri": args.learn, "rows": int(rows.shape[0])}, **metrics}})
    print(json.dumps({"model_version": version, "encoder": encoder.describe(),
                      "train_s": metrics["train_s"], "rounds": metrics.get("rounds")}, indent=1))
    return 0


def _train_for_index(args) -> int:
    from cluster.model_updates import train_for_index

    print(json.dumps(train_for_index(args.store, args.name, args.sample_size or 100_000,
                                     args.seed, address=args.address), indent=1))
    return 0


def _models(args) -> int:
    from shards import Store
    from shards.registry import list_models

    models = list_models(Store(args.store))
    if args.json:
        print(json.dumps(models, indent=1))
        return 0
    print(f"{'model_version':<20} {'created':<26} {'index':<14} {'encoder':<8} {'dim':>4} "
          f"{'nlist':>6} {'M':>3} {'sample':>8} {'val R@10':>8}")
    for m in models:
        val = (m["validation"] or {}).get("recall@10") if isinstance(m["validation"], dict) else None
        print(f"{m['model_version']:<20} {m['created'] or '-':<26} {m['index'] or '-':<14} "
              f"{m['encoder']:<8} {m['dim']:>4} {m['nlist']:>6} {m['code_bytes']:>3} "
              f"{(m['sample'] or {}).get('rows', '-'):>8} {val if val is None else f'{val:.3f}':>8}")
    return 0


def _reencode_request(args):
    from cluster.model_updates import ReencodeRequest

    return ReencodeRequest(store=args.store, name=args.name, model=args.model,
                           if_stale=args.if_stale, keep=args.keep, lease_ttl_s=args.lease_ttl)


def _reencode(args) -> int:
    from cluster.model_updates import reencode

    print(json.dumps(reencode(_reencode_request(args), args.address), indent=1, default=str))
    return 0


def _schedule(args) -> int:
    from cluster.model_updates import (SCHEDULER_NAMESPACE, parse_period, scheduler_name,
                                       start_scheduler, stop_scheduler)

    if args.stop:
        status = stop_scheduler(args.name, args.address or "auto")
        print(f"snapline schedule: stopped actor {scheduler_name(args.name)} after "
              f"{len(status['runs'])} recorded runs")
        return 0
    if not args.store or not args.every:
        raise ValueError("--store and --every are required to start a scheduler "
                         "(or --stop to stop one)")
    every = parse_period(args.every)
    start_scheduler(_reencode_request(args), every, args.address or "auto")
    print(f"snapline schedule: actor {scheduler_name(args.name)} (namespace "
          f"{SCHEDULER_NAMESPACE}) checks every {every:g} s")
    return 0


def _build(args) -> int:
    from cluster.build import build, print_summary
    from cluster.build_config import load_build_config

    print_summary(build(load_build_config(args.config), args.address), args.summary_json)
    return 0


def _plan(args) -> int:
    from cluster.plan import PlanConfig, format_plan, plan

    result = plan(PlanConfig(n=args.n, dim=args.dim, code_bytes=args.code_bytes, gpus=args.gpus,
                             gpu_mem_gb=args.gpu_mem_gb, nlist=args.nlist, nedge=args.nedge,
                             rows_per_shard=args.rows_per_shard,
                             encode_workers=args.encode_workers))
    if args.json:
        print(json.dumps(result, indent=1))
    print(format_plan(result))
    return 0


def _demo(args) -> int:
    from cluster.demo import DemoConfig, run_demo

    cfg = DemoConfig(store=args.store, **({"data_dir": args.data_dir} if args.data_dir else {}))
    result = run_demo(cfg)
    print(json.dumps(result, indent=1))
    print(f"snapline demo: {result['ntotal']} vectors, nlist={result['nlist']} "
          f"nedge={result['nedge']}, nprobe={result['nprobe']} nlines={result['nlines']}: "
          f"recall@1 {result['recall@1']:.3f}  recall@10 {result['recall@10']:.3f}  "
          f"QPS {result['qps']:.0f}")
    return 0


def _serve(args) -> int:
    from cluster.coordinator import start_service
    from cluster.serve_types import ServeConfig

    cfg = ServeConfig(store=args.store, name=args.name, searchers=args.searchers,
                      replicas=args.replicas, timeout_s=args.timeout_s, poll_s=args.poll_s,
                      searcher_cpus=args.searcher_cpus, searcher_gpus=args.searcher_gpus,
                      searcher_threads=args.searcher_threads)
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
    from cluster.coordinator import stop_service

    stop_service(args.name, args.address)
    print(f"snapline stop: {args.name} stopped")
    return 0


def _add_train_parser(sub) -> None:
    train = sub.add_parser("train", help="train an encoder and VLQ codebooks; write a model "
                           "version into a store")
    train.add_argument("--store", required=True, help="store URI (local path or s3://...)")
    train.add_argument("--name", default=None, help="a published index: train a new model "
                       "version for it on a fresh sample of its source (a Ray task)")
    train.add_argument("--learn", default=None, help="training vectors (any supported format)")
    train.add_argument("--nlist", type=int, default=None)
    train.add_argument("--address", default=None, help="Ray address (with --name)")
    train.add_argument("--nedge", type=int, default=32)
    train.add_argument("--code-bytes", type=int, default=16)
    train.add_argument("--nlambda", type=int, default=256)
    train.add_argument("--encoder", default="none", help="none, opq, gsl, gsl+qn8, gsl+smh0.5 ...")
    train.add_argument("--sample-size", type=int, default=None, help="with --learn: first N "
                       "rows only; with --name: uniform sample size (default 100000)")
    train.add_argument("--seed", type=int, default=0)
    train.set_defaults(func=_train)

    models = sub.add_parser("models", help="list the model versions of a store")
    models.add_argument("--store", required=True)
    models.add_argument("--json", action="store_true")
    models.set_defaults(func=_models)


def _add_reencode_arguments(p, schedule: bool) -> None:
    p.add_argument("--store", required=not schedule, default=None)
    p.add_argument("--name", required=True)
    p.add_argument("--model", default="latest", help="a model version or 'latest'")
    p.add_argument("--if-stale", action="store_true", default=schedule,
                   help="do nothing when the index already uses that model")
    p.add_argument("--keep", type=int, default=3, help="published versions to keep")
    p.add_argument("--address", default=None, help="Ray address")
    p.add_argument("--lease-ttl", type=float, default=600.0, help="seconds the re-encode "
                   "lease lives without renewal (renewed every third of it while running)")


def _add_reencode_parsers(sub) -> None:
    reencode = sub.add_parser("reencode", help="re-encode an index with a model into a new "
                              "published version")
    _add_reencode_arguments(reencode, schedule=False)
    reencode.set_defaults(func=_reencode)

    schedule = sub.add_parser("schedule", help="start a detached actor that re-encodes an index "
                              "when a newer model appears (--stop: stop it)")
    _add_reencode_arguments(schedule, schedule=True)
    schedule.add_argument("--every", default=None, help="period: 90s, 15m, 1h ... (required "
                          "unless --stop)")
    schedule.add_argument("--stop", action="store_true", help="stop the scheduler of --name "
                          "(its loop and its actor)")
    schedule.set_defaults(func=_schedule)


def _add_build_parsers(sub) -> None:
    build = sub.add_parser("build", help="build and publish an index from a build.yaml on a "
                           "local Ray (what `python -m cluster.build` does under ray job submit)")
    add_build_arguments(build)
    build.set_defaults(func=_build)

    plan = sub.add_parser("plan", help="sizing estimate: shards, GPUs to hold the lists, "
                          "build time from a cost measured on this machine")
    plan.add_argument("--n", type=int, required=True, help="number of vectors")
    plan.add_argument("--dim", type=int, required=True)
    plan.add_argument("--code-bytes", type=int, default=16)
    plan.add_argument("--gpus", type=int, default=8)
    plan.add_argument("--gpu-mem-gb", type=float, default=80.0)
    plan.add_argument("--nlist", type=int, default=None)
    plan.add_argument("--nedge", type=int, default=32)
    plan.add_argument("--rows-per-shard", type=int, default=10_000_000)
    plan.add_argument("--encode-workers", type=int, default=None)
    plan.add_argument("--json", action="store_true", help="also print the plan as JSON")
    plan.set_defaults(func=_plan)

    demo = sub.add_parser("demo", help="build and query the bundled dataset on a local Ray")
    demo.add_argument("--store", default="./snapline-store")
    demo.add_argument("--data-dir", default=None, help="big-ann folder (default: bundled)")
    demo.set_defaults(func=_demo)


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
    search.add_argument("--timeout-s", type=float, default=None)
    search.add_argument("--on-partial", choices=("raise", "partial"), default="raise")
    search.add_argument("--out", default=None, help=".npz file for distances and ids")
    search.set_defaults(func=_search)
    return search


def _add_serving_parsers(sub) -> None:
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


def _add_bench_commands(sub) -> None:
    bench = sub.add_parser("bench", help="snapline vs faiss baselines on a big-ann folder")
    bench.add_argument("data_dir", help="folder with base.*, query.*, learn.*, gt.ibin")
    bench.add_argument("--code-bytes", type=int, default=16)
    bench.add_argument("--out", required=True, help="output folder for results.json and the plot")
    bench.add_argument("--threads", type=int, default=None, help="threads for every system "
                       "(default: all cores)")
    bench.add_argument("--systems", default=None,
                       help="comma-separated subset of snapline,ivfpq,opq_ivfpq,ivfpq_fastscan")
    bench.add_argument("--nlist", type=int, default=None, help="VLQ nlist (default: sized "
                       "from the data)")
    bench.add_argument("--nedge", type=int, default=32)
    bench.add_argument("--encoder", action="append", default=None,
                       help="encoder spec for a snapline run, repeatable: none, opq, gsl, "
                            "gsl+qn8, gsl+qn4, gsl+smh0.25 ... (default: none)")
    bench.set_defaults(func=_bench)

    plot = sub.add_parser("plot", help="re-plot a results.json of `snapline bench`: each "
                          "system's Pareto front, R@10 against QPS")
    plot.add_argument("results_json", help="results.json written by `snapline bench`")
    plot.add_argument("--out", default=None, help="PNG to write (default: recall_qps.png "
                      "beside the results file)")
    plot.set_defaults(func=_plot)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="snapline", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_bench_commands(sub)
    _add_train_parser(sub)
    _add_reencode_parsers(sub)
    _add_build_parsers(sub)
    _add_serving_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from cluster.serve_types import PartialResultError

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"snapline {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except (ConnectionError, PartialResultError) as exc:   # incl. ServiceUnavailableError
        print(f"snapline {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
