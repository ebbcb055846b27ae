"""Benchmark commands: `snapline bench`
(run, then plot from the JSON) and `snapline plot`."""
from __future__ import annotations



def _bench(args) -> int:
    from bench.config import BenchConfig
    from bench.plotting import plot_results
    from bench.runner import RESULTS_FILE, run_benchmark

    systems = tuple(args.systems.split(",")) if args.systems is not None else None
    cfg = BenchConfig(data_dir=args.data_dir, out_dir=args.out, code_bytes=args.code_bytes,
                      **({"threads": args.threads} if args.threads is not None else {}),
                      **({"systems": systems} if systems is not None else {}),
                      **({"nlist_vlq": args.nlist} if args.nlist is not None else {}),
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


def add_bench_commands(sub) -> None:
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
