"""The service's HTTP endpoint (JSON in and out) for callers that are not Python: served by
the coordinator's event loop (aiohttp, which Ray itself ships), with the coordinator's own
checks, batching and errors (SPEC 5).

    snapline serve --store S --name sift --http-port 8000
    curl -s -X POST http://127.0.0.1:8000/v1/search -H 'Content-Type: application/json' \\
         -d '{"queries": [[0, 1, ...]], "k": 10, "nprobe": 32, "nlines": 256}'
    -> {"version": "v000001", "ids": [[...]], "distances": [[...]], "missing_shards": []}
    curl -s http://127.0.0.1:8000/v1/stats

A bad request is 400 {"error": "..."} with the same message the Python client raises; a
result missing shards is 503 {"error": ..., "missing_shards": [...]} unless the request
says "on_partial": "partial" (then 200 with "missing_shards" listed). Empty slots (fewer
hits than k) are id -1 and distance null.
"""
from __future__ import annotations

import json
import logging

import numpy as np
from aiohttp import web

from cluster.serving.types import SearchParams

log = logging.getLogger(__name__)

SEARCH_FIELDS = ("k", "nprobe", "nlines", "rerank", "filter", "refine")
REQUEST_FIELDS = {"queries", "timeout_s", "on_partial", *SEARCH_FIELDS}
MAX_BODY_BYTES = 64 << 20


def _error(status: int, message: str, **extra) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


def _parse(body) -> tuple[np.ndarray, SearchParams, float | None, str]:
    if not isinstance(body, dict):
        raise ValueError(f"the request body must be a JSON object, got {type(body).__name__}")
    unknown = sorted(set(body) - REQUEST_FIELDS)
    if unknown:
        raise ValueError(f"unknown fields {unknown}; expected some of {sorted(REQUEST_FIELDS)}")
    if "queries" not in body:
        raise ValueError("queries is required: a list of query vectors (lists of numbers)")
    try:
        queries = np.asarray(body["queries"], dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"queries must be a list of equally long lists of numbers: {exc}") \
            from None
    params = SearchParams(**{f: body[f] for f in SEARCH_FIELDS if f in body})
    on_partial = body.get("on_partial", "raise")
    if on_partial not in ("raise", "partial"):
        raise ValueError(f"on_partial must be 'raise' or 'partial', got {on_partial!r}")
    return queries, params, body.get("timeout_s"), on_partial


def _answer(result) -> dict:
    distances = [[float(d) if np.isfinite(d) else None for d in row] for row in result.distances]
    return {"version": result.version, "ids": result.ids.tolist(), "distances": distances,
            "missing_shards": list(result.missing_shards)}


def make_app(coordinator) -> web.Application:
    """Routes over a QueryCoordinator (its `search` and `stats`)."""

    async def search(request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return _error(400, f"the request body is not JSON: {exc}")
        try:
            queries, params, timeout_s, on_partial = _parse(body)
            result = await coordinator.search(queries, params, timeout_s)
        except ValueError as exc:
            return _error(400, str(exc))
        except Exception as exc:                      # the service's own failure
            log.exception("HTTP search failed")
            return _error(500, f"{type(exc).__name__}: {exc}")
        if result.partial and on_partial == "raise":
            return _error(503, f"partial result: shards {list(result.missing_shards)} of index "
                               f"version {result.version} did not answer in time; send "
                               f"\"on_partial\": \"partial\" to accept partial results",
                          missing_shards=list(result.missing_shards))
        return web.json_response(_answer(result))

    async def stats(_request: web.Request) -> web.Response:
        return web.json_response(await coordinator.stats())

    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app.router.add_post("/v1/search", search)
    app.router.add_get("/v1/stats", stats)
    return app


async def start_http(coordinator, host: str, port: int) -> tuple[web.AppRunner, str]:
    """Serve the endpoint on host:port (0: a free port); returns the runner and its URL."""
    runner = web.AppRunner(make_app(coordinator), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1]
    return runner, f"http://{host}:{bound}"
