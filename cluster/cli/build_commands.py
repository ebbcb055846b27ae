"""Build commands: `snapline build` (the build job),
`plan` (sizing) and `demo` (the main job on the bundled data)."""
from __future__ import annotations

import json

from cluster.build.args import add_build_arguments


def _build(args) -> int:
    from cluster.build.pipeline import build, print_summary
    from cluster.build.config import load_build_config

    print_summary(build(load_build_config(args.config), args.address), args.summary_json)
    return 0


def _plan(args) -> int:
    from cluster.build.plan import PlanConfig, format_plan, plan

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


def add_build_commands(sub) -> None:
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
