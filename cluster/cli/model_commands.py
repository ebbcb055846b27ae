"""Model commands: `snapline train` (a model version from a vector file or for an index),
`models` (list them), `reencode` and `schedule` (re-encode an index with a newer model)."""
from __future__ import annotations

import json

DEFAULT_NEDGE = 32
METRIC_CHOICES = ("l2", "ip", "cosine")   # shards.shape.METRICS (checked by IndexShape)


def _train(args) -> int:
    _check_train_args(args)
    if args.name:
        if args.metric is not None:
            raise ValueError(f"--metric {args.metric}: with --name the new model keeps the "
                             f"index's metric; omit --metric")
        return _train_for_index(args)
    if not args.learn or not args.nlist:
        raise ValueError("give --name (a new model for a published index, from a fresh sample "
                         "of its source) or --learn and --nlist (a model from a vector file)")
    from cluster.store_check import checked_store
    from shards import IndexShape, open_vectors
    from trainers.encoder_config import encoder_config_from_spec
    from trainers.model_version import train_model_version

    store = checked_store(args.store)      # a known, reachable store, before any training
    learn = open_vectors(args.learn)
    encoder_cfg = encoder_config_from_spec(args.encoder, seed=args.seed)
    # --nedge omitted: 32, capped at nlist - 1 (documented); given: must be < --nlist
    nedge = min(DEFAULT_NEDGE, args.nlist - 1) if args.nedge is None else args.nedge
    shape = IndexShape(learn.d, args.nlist, nedge, args.code_bytes, args.nlambda,
                       encoder=encoder_cfg.kind, code_dim=encoder_cfg.dim_out,
                       pq_bits=args.pq_bits, metric=args.metric or "l2")
    rows = learn.read(0, min(learn.n, args.sample_size)) if args.sample_size else learn.read()
    result = train_model_version(rows, shape, encoder_cfg, store,
                                 {"uri": args.learn, "rows": int(rows.shape[0])})
    print(json.dumps({key: result[key] for key in ("model_version", "encoder", "train_s",
                                                   "rounds", "validation")}, indent=1))
    return 0


def _check_train_args(args) -> None:
    """The numbers of `snapline train`, named by their flags, before anything is read."""
    for flag, value, low in (("--nlist", args.nlist, 2), ("--code-bytes", args.code_bytes, 1),
                             ("--nlambda", args.nlambda, 1), ("--nedge", args.nedge, 1),
                             ("--sample-size", args.sample_size, 1)):
        if value is not None and value < low:
            raise ValueError(f"{flag} must be >= {low}, got {value}")
    if args.nlambda > 256:
        raise ValueError(f"--nlambda must be <= 256 (one lambda byte), got {args.nlambda}")
    if args.nedge is not None and args.nlist is not None and args.nedge >= args.nlist:
        raise ValueError(f"--nedge {args.nedge} must be < --nlist {args.nlist} (edges go to "
                         f"other centroids; omit --nedge for min(32, nlist - 1))")


def _train_for_index(args) -> int:
    from cluster.store_check import checked_store
    from cluster.updates.reencode import train_for_index

    checked_store(args.store, must_exist=True)
    print(json.dumps(train_for_index(args.store, args.name, args.sample_size or 100_000,
                                     args.seed, address=args.address), indent=1))
    return 0


def _cell(value, spec: str = "") -> str:
    """A table cell: '-' for what an (older) model's meta does not record."""
    if value is None or value == "" or isinstance(value, (dict, list)):
        return "-"
    return format(value, spec) if spec and isinstance(value, (int, float)) else str(value)


def _models(args) -> int:
    from cluster.store_check import checked_store
    from shards.registry import list_models

    models = list_models(checked_store(args.store, must_exist=True))
    if args.json:
        print(json.dumps(models, indent=1))
        return 0
    print(f"{'model_version':<20} {'created':<26} {'index':<14} {'encoder':<8} {'dim':>4} "
          f"{'nlist':>6} {'M':>3} {'sample':>8} {'val R@10':>8}")
    for m in models:
        sample, val = m.get("sample"), m.get("validation")
        rows = sample.get("rows") if isinstance(sample, dict) else None
        recall = val.get("recall@10") if isinstance(val, dict) else None
        print(f"{m['model_version']:<20} {_cell(m['created']):<26} {_cell(m['index']):<14} "
              f"{_cell(m['encoder']):<8} {m['dim']:>4} {m['nlist']:>6} {m['code_bytes']:>3} "
              f"{_cell(rows):>8} {_cell(recall, '.3f'):>8}")
    return 0


def _reencode_request(args):
    from cluster.store_check import checked_store
    from cluster.updates.reencode import ReencodeRequest

    checked_store(args.store, must_exist=True)     # before Ray: a known, reachable store
    return ReencodeRequest(store=args.store, name=args.name, model=args.model,
                           if_stale=args.if_stale, keep=args.keep, lease_ttl_s=args.lease_ttl)


def _reencode(args) -> int:
    from cluster.updates.reencode import reencode

    print(json.dumps(reencode(_reencode_request(args), args.address), indent=1, default=str))
    return 0


def _schedule(args) -> int:
    from cluster.updates.scheduler import SCHEDULER_NAMESPACE, parse_period, scheduler_name, start_scheduler, stop_scheduler

    if args.stop:
        status = stop_scheduler(args.name, args.address or "auto")
        print(f"snapline schedule: stopped actor {scheduler_name(args.name)} after "
              f"{len(status['runs'])} recorded runs")
        return 0
    if not args.store or not args.every:
        raise ValueError("--store and --every are required to start a scheduler "
                         "(or --stop to stop one)")
    every = parse_period(args.every)
    request = _reencode_request(args)
    start_scheduler(request, every, args.address or "auto")
    print(f"snapline schedule: actor {scheduler_name(args.name)} (namespace "
          f"{SCHEDULER_NAMESPACE}) checks every {every:g} s")
    return 0


def add_train_commands(sub) -> None:
    train = sub.add_parser("train", help="train an encoder and VLQ codebooks; write a model "
                           "version into a store")
    train.add_argument("--store", required=True, help="store URI (local path or s3://...)")
    train.add_argument("--name", default=None, help="a published index: train a new model "
                       "version for it on a fresh sample of its source (a Ray task)")
    train.add_argument("--learn", default=None, help="training vectors (any supported format)")
    train.add_argument("--nlist", type=int, default=None)
    train.add_argument("--address", default=None, help="Ray address (with --name)")
    train.add_argument("--nedge", type=int, default=None, help=f"graph edges per centroid "
                       f"(default {DEFAULT_NEDGE}, capped at nlist - 1)")
    train.add_argument("--code-bytes", type=int, default=16)
    train.add_argument("--pq-bits", type=int, choices=(4, 8), default=8,
                       help="bits per PQ sub-code: 8 (scalar scan) or 4 (SIMD fast scan)")
    train.add_argument("--nlambda", type=int, default=256)
    train.add_argument("--metric", choices=METRIC_CHOICES, default=None,
                       help="what the index ranks by: l2 (squared L2, default), ip (inner "
                            "product) or cosine (rows and queries normalised); with --name: "
                            "the index's")
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


def add_reencode_commands(sub) -> None:
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
