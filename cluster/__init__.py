"""The Ray layer (SPEC 5): thin actors and jobs around the core, one room per capability.

    build/     the build job: config, sample -> train -> encode -> publish, sizing plan
    serving/   shard searchers, the query coordinator, routing and merging
    updates/   model updates: train for an index, re-encode, the scheduler
    live/      live index jobs: append (encode on Ray, one publish), delete, compact
    cli/       the `snapline` command line, one module per group of subcommands
    client.py  the Python client of a service; demo.py the main job on the bundled data
    estimate.py, ray_session.py: memory estimates and the Ray connection, shared by the rooms
    store_check.py: a store URI checked where it enters (protocol, reachable, present)
    exit_status.py: the exit status and one-line error of `snapline`, `python -m cluster.build`
    and `python -m cluster.live`
"""
