"""Benchmark commands: `snapline bench`
(run, then plot and tabulate the fronts from the JSON) and `snapline plot`."""
from __future__ import annotations


def _int_list(text: str, flag: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"{flag} must be comma-separated ints, got {text!r}") from None


def _bench(args) -> int:
    from bench.config import BenchConfig
    from bench.fronts import write_fronts
    from bench.plotting import plot_results
    from bench.runner import RESULTS_FILE, run_benchmark

    options = {}
    if args.scale_rows is not None:   # the metric's set (e.g. IP), then benchmark it
        from bench.dataset_files import make_metric_set

        args.data_dir = str(make_metric_set(args.data_dir, args.scale_rows, args.metric,
                                            seed=args.scale_seed))
    if args.threads is not None:
        options["threads"] = args.threads
    if args.systems is not None:
        options["systems"] = tuple(args.systems.split(","))
    if args.nlist is not None:
        options["nlist_vlq"] = args.nlist
    if args.nlists is not None:
        options["nlists"] = _int_list(args.nlists, "--nlists")
    if args.pq_bits is not None:
        options["pq_bits"] = _int_list(args.pq_bits, "--pq-bits")
    cfg = BenchConfig(data_dir=args.data_dir, out_dir=args.out, code_bytes=args.code_bytes,
                      encoders=tuple(args.encoder or ["none"]),
                      nedges=_int_list(args.nedge, "--nedge"),
                      repeats=args.repeats, metric=args.metric, refine=args.refine, **options)
    results = run_benchmark(cfg)
    png = plot_results(cfg.out_dir / RESULTS_FILE)   # the plot step reads the file on disk
    fronts = write_fronts(cfg.out_dir / RESULTS_FILE)
    for run in results["runs"]:
        best = max(run["search"], key=lambda p: p["recall@10"])
        print(f"{run['index']:<48} bytes/vec {run['bytes_per_vector']:5.1f}  "
              f"best R@10 {best['recall@10']:.3f} at {best['qps']:.0f} QPS")
    for entry in results["skipped"]:
        print(f"skipped {entry['system']}: {entry['reason']}")
    for entry in results["failed"]:
        print(f"FAILED {entry['system']} ({entry['index']}): {entry['error']}")
    print(f"wrote {cfg.out_dir}/{RESULTS_FILE}, {png} and {fronts}")
    return 1 if results["failed"] else 0


def _plot(args) -> int:
    from bench.fronts import write_fronts
    from bench.plotting import plot_results

    print(f"wrote {plot_results(args.results_json, args.out)}")
    print(f"wrote {write_fronts(args.results_json)}")
    return 0


def add_bench_commands(sub) -> None:
    from bench.config import SYSTEMS

    bench = sub.add_parser("bench", help="snapline vs its peers (faiss, ScaNN, LanceDB) on a "
                           "big-ann folder")
    bench.add_argument("data_dir", help="folder with base.*, query.*, learn.*, gt.ibin")
    bench.add_argument("--code-bytes", type=int, default=16)
    bench.add_argument("--out", required=True, help="output folder for results.json, the "
                       "plot and fronts.md")
    bench.add_argument("--threads", type=int, default=None, help="threads for every system "
                       "(default: all cores)")
    bench.add_argument("--systems", default=None,
                       help=f"comma-separated subset of {','.join(SYSTEMS)} (default: all; "
                            "scann and lancedb need the `bench` extra)")
    bench.add_argument("--nlists", default=None, help="comma-separated nlists for every "
                       "IVF-based system, snapline included (default: powers of two from "
                       "~n/1024 to ~n/128, one lower for snapline, >= 39 learn points each)")
    bench.add_argument("--nlist", type=int, default=None, help="one VLQ nlist for snapline "
                       "(overrides --nlists for snapline)")
    bench.add_argument("--pq-bits", default=None, help="snapline code bits, comma-separated "
                       "among 4,8 (default: 4,8)")
    bench.add_argument("--nedge", default="32", help="snapline's graph edges per centroid "
                       "(lines per list), comma-separated: one build per value (default: 32)")
    bench.add_argument("--refine", action="store_true",
                       help="also snapline with a vector store (uint8 for byte vectors, else "
                            "sq8), its `refine` swept over k, 2k and 4k (issue 15)")
    bench.add_argument("--metric", choices=("l2", "ip", "cosine"), default="l2",
                       help="what every system ranks by; data_dir's gt.ibin must be for it "
                            "(its metric.json; l2 without, also ip/cosine for unit-norm rows)")
    bench.add_argument("--scale-rows", default=None, metavar="DIR",
                       help="first write DIR: data_dir with base and learn rows scaled by a "
                            "seeded per-row factor in [0.5, 2] and gt.ibin recomputed for "
                            "--metric (the IP set of a unit-norm set), then benchmark DIR")
    bench.add_argument("--scale-seed", type=int, default=0, help="seed of --scale-rows")
    bench.add_argument("--repeats", type=int, default=3, help="timed calls per sweep point "
                       "(QPS from their median)")
    bench.add_argument("--encoder", action="append", default=None,
                       help="encoder spec for a snapline run, repeatable: none, opq, gsl, "
                            "gsl+qn8, gsl+qn4, gsl+smh0.25 ... (default: none)")
    bench.set_defaults(func=_bench)

    plot = sub.add_parser("plot", help="re-plot a results.json of `snapline bench`: each "
                          "system's Pareto front, R@10 against QPS; and its fronts.md")
    plot.add_argument("results_json", help="results.json written by `snapline bench`")
    plot.add_argument("--out", default=None, help="PNG to write (default: recall_qps.png "
                      "beside the results file)")
    plot.set_defaults(func=_plot)
