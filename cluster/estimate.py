"""Memory a build, a re-encode or a served index needs, estimated before anything
launches (STYLE "Estimate before launching"; the model is autofaiss'
`estimate_memory_required_for_index_creation`). Pure functions of the sizes; the
callers (cluster.build.pipeline.run_build, cluster.serving.coordinator.start_service) compare the
estimate with the memory Ray reports free and refuse with "required vs available".

- trainer: the float32 sample (rows x d x 4) plus its working copies while training
  (the train/validation split, the residuals the codebooks are trained on, the encoder
  output), plus the model arrays;
- each encode worker: the model arrays, one partition's ids, list ids, lambdas and codes
  (twice: the encoded chunks and the sorted shard), and a read chunk in its three forms
  (as read, float32, encoded);
- each searcher: its shards' resident lists (code, lambda, id, ADC term per vector) and
  the stored rows it reads them from, plus the model arrays.

Every process also carries the interpreter with numpy, numba, faiss and torch loaded
(PROCESS_BYTES). The estimate is of the peak of each part; the trainer runs before the
encode workers start, so each part is compared with the available memory on its own.
Ray reports the cluster's free memory as a whole, so a part that fits in it may still
not fit on one node.
"""
from __future__ import annotations

from dataclasses import dataclass

from indexer.vlq import LAMBDA_BYTES, TERM_BYTES
from shards.shape import IndexShape

GB = 1e9
FLOAT_BYTES = 4
PROCESS_BYTES = 500_000_000      # an actor's interpreter and libraries (~0.25 GB after
                                 # imports on this machine) plus compiled kernels
TRAIN_WORKING_COPIES = 3         # split copy, residuals, encoder output of the sample
LIST_ID_BYTES = 4                # uint32 list id per encoded row (stored shard column)
ID_BYTES = 8                     # an id at its widest (int64: stored, and resident when the
                                 # ids of one searcher span 2**32 or more)
CHUNK_FORMS = 3                  # a read chunk as read, as float32, encoded


@dataclass(frozen=True)
class MemoryNeed:
    """The peak memory of one part of a job (all its processes), and how it adds up."""

    part: str            # "trainer", "encode workers", "searchers"
    bytes: int
    detail: str


def model_bytes(shape: IndexShape) -> int:
    """The model arrays: centroids, graph (edges, edge lengths), lambda values, PQ
    codebooks, and the encoder's matrix when there is one."""
    centroids = shape.nlist * shape.dim * FLOAT_BYTES
    graph = shape.nlist * shape.nedge * (4 + FLOAT_BYTES)
    ksub = 1 << shape.pq_bits
    codebooks = ksub * shape.code_dim * FLOAT_BYTES + shape.nlambda * FLOAT_BYTES
    if shape.pq_bits == 4:   # the fast scan's per-centroid tables (VLQQuantizer.centroid_tables)
        codebooks += shape.nlist * shape.pq_m * ksub * FLOAT_BYTES
    encoder = 0 if shape.encoder == "none" else shape.dim * shape.code_dim * FLOAT_BYTES
    return centroids + graph + codebooks + encoder


def stored_row_bytes(shape: IndexShape) -> int:
    """One encoded row as the encode stage holds and writes it (before compression)."""
    return shape.code_bytes + LAMBDA_BYTES + ID_BYTES + LIST_ID_BYTES


def resident_row_bytes(shape: IndexShape) -> int:
    """One vector of a searcher's resident lists."""
    return shape.code_bytes + LAMBDA_BYTES + ID_BYTES + (TERM_BYTES if shape.pq_bits == 8 else 0)


def trainer_memory(shape: IndexShape, train_rows: int) -> MemoryNeed:
    sample = train_rows * shape.dim * FLOAT_BYTES
    total = PROCESS_BYTES + sample * (1 + TRAIN_WORKING_COPIES) + model_bytes(shape)
    return MemoryNeed("trainer", total, f"{train_rows} sample rows x d={shape.dim} x 4 B, "
                      f"x{1 + TRAIN_WORKING_COPIES} with the training working set, + model")


def encode_memory(shape: IndexShape, rows_per_shard: int, workers: int,
                  read_chunk_rows: int) -> MemoryNeed:
    partition = 2 * rows_per_shard * stored_row_bytes(shape)
    chunk = CHUNK_FORMS * min(read_chunk_rows, rows_per_shard) * shape.dim * FLOAT_BYTES
    one = PROCESS_BYTES + model_bytes(shape) + partition + chunk
    return MemoryNeed("encode workers", workers * one,
                      f"{workers} workers x {one / GB:.2f} GB (model, one partition of "
                      f"{rows_per_shard} rows, read chunks of {read_chunk_rows} rows)")


def build_memory(shape: IndexShape, *, train_rows: int, rows_per_shard: int, workers: int,
                 read_chunk_rows: int) -> list[MemoryNeed]:
    """The parts of a build (train_rows=0: a model is given, no trainer: a re-encode)."""
    parts = [trainer_memory(shape, train_rows)] if train_rows > 0 else []
    return parts + [encode_memory(shape, rows_per_shard, workers, read_chunk_rows)]


def serving_memory(shape: IndexShape, group_rows: list[int], replicas: int) -> MemoryNeed:
    """Every searcher of a served version: `replicas` per shard group of `group_rows` rows."""
    per_row = resident_row_bytes(shape) + stored_row_bytes(shape)
    total = replicas * sum(PROCESS_BYTES + model_bytes(shape) + rows * per_row
                           for rows in group_rows)
    return MemoryNeed("searchers", total, f"{len(group_rows)} groups x {replicas} replicas, "
                      f"{sum(group_rows)} vectors x {per_row} B resident and read, + model "
                      f"per searcher")


def refuse_unless_fits(needs: list[MemoryNeed], available_bytes: float | None,
                       what: str = "build") -> None:
    """ValueError naming the first part whose need exceeds the available memory
    (None: not known, nothing is refused)."""
    if available_bytes is None:
        return
    for need in needs:
        if need.bytes > available_bytes:
            raise ValueError(f"{what} does not fit: {need.part}: required "
                             f"{need.bytes / GB:.1f} GB vs available {available_bytes / GB:.1f} "
                             f"GB ({need.detail})")


def append_memory(shape: IndexShape, rows: int, vector_bytes: int,
                  attribute_bytes: int) -> MemoryNeed:
    """The driver of an append (cluster.live.append): every appended row encoded (id,
    list id, lambda, code and the stored vector's `vector_bytes`) held APPEND_COPIES times
    (gathered, ordered, cut into shards) plus the attribute table twice (read, reordered)."""
    per_row = stored_row_bytes(shape) + vector_bytes
    total = PROCESS_BYTES + APPEND_COPIES * rows * per_row + 2 * attribute_bytes
    return MemoryNeed("append driver", total, f"{rows} rows x {per_row} B x {APPEND_COPIES} "
                      f"copies + attributes {attribute_bytes / GB:.2f} GB x 2")


APPEND_COPIES = 3


def local_available_memory() -> float | None:
    """Bytes this machine reports available (Linux MemAvailable; None elsewhere)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        return None
    return None
