"""The build job (SPEC 5): `python -m cluster.build --config build.yaml`.

config.py (build.yaml), args.py (its command-line arguments), pipeline.py (check, claim,
train, encode, publish; `build()` is the entry), encode_workers.py (the Ray Data encoder
pool), plan.py (`snapline plan`). Nothing is imported here, so that the CLI can read a
config without loading Ray and torch.
"""
