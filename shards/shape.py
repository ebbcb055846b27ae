"""The shape of an index: the one type that says what a model, a manifest, a shard and a
VLQIndex are sized for (SPEC 2).

    IndexShape(dim=128, nlist=1024, nedge=32, code_bytes=16, nlambda=256,
               encoder="none", code_dim=128, pq_bits=8, metric="l2")

`code_dim` is the dimension the encoder outputs (what VLQ quantizes): `dim` for the
identity encoder. `pq_bits` is the width of one PQ sub-code: 8 (one sub-quantizer per code
byte, the scalar lookup scan) or 4 (two per byte, the SIMD fast scan); a code is always
`code_bytes` bytes, so `pq_m = code_bytes * 8 // pq_bits` sub-quantizers. `metric` is what the index ranks by
(chosen at training; metadata written before it existed reads as "l2").
Every check names the field and the value.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields


#: the distances an index ranks by: squared L2 (smallest first), inner product and cosine
#: similarity (largest first); a shape without a metric (files before issue 15) is l2
METRICS = ("l2", "ip", "cosine")


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {name}={value!r}")
    return value


@dataclass(frozen=True)
class IndexShape:
    dim: int                 # input vectors
    nlist: int               # coarse centroids
    nedge: int               # graph edges per centroid (lists = nlist * nedge)
    code_bytes: int          # PQ code bytes per vector
    nlambda: int = 256       # lambda levels (one byte)
    encoder: str = "none"    # encoder kind: "none", "opq", "gsl"
    code_dim: int | None = None   # encoder output dimension; None: dim
    pq_bits: int = 8         # bits per PQ sub-code: 8, or 4 (fast scan)
    metric: str = "l2"       # "l2", "ip" (inner product) or "cosine" (SPEC 7)

    def __post_init__(self):
        for name in ("dim", "nlist", "nedge", "code_bytes", "nlambda"):
            _positive_int(getattr(self, name), name)
        if self.code_dim is None:
            object.__setattr__(self, "code_dim", self.dim)
        _positive_int(self.code_dim, "code_dim")
        if self.nlist < 2:
            raise ValueError(f"nlist must be >= 2 (lines join two centroids), got nlist={self.nlist}")
        if self.nedge >= self.nlist:
            raise ValueError(f"nedge must be < nlist (edges go to other centroids), got "
                             f"nedge={self.nedge} with nlist={self.nlist}")
        if self.nlambda > 256:
            raise ValueError(f"nlambda must be <= 256 (one lambda byte), got nlambda={self.nlambda}")
        if self.code_dim > self.dim:
            raise ValueError(f"code_dim={self.code_dim} exceeds dim={self.dim}")
        if isinstance(self.pq_bits, bool) or self.pq_bits not in (4, 8):
            raise ValueError(f"pq_bits must be 4 or 8, got pq_bits={self.pq_bits!r}")
        if self.code_dim % self.pq_m:
            per = "one per byte" if self.pq_bits == 8 else "two 4-bit ones per byte"
            raise ValueError(f"code_bytes={self.code_bytes} must divide the encoded dimension "
                             f"{self.code_dim} into {self.pq_m} PQ sub-spaces ({per})")
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {', '.join(METRICS)}, got metric={self.metric!r}")
        if not isinstance(self.encoder, str) or not self.encoder:
            raise ValueError(f"encoder must name an encoder kind, got encoder={self.encoder!r}")

    @property
    def nlists(self) -> int:
        """Inverted lists: one per (centroid, edge)."""
        return self.nlist * self.nedge

    @property
    def pq_m(self) -> int:
        """PQ sub-quantizers: code_bytes * 8 // pq_bits."""
        return self.code_bytes * 8 // self.pq_bits

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: dict, where: str) -> "IndexShape":
        """From a manifest's, a model's or a shard's metadata; errors name `where`."""
        if not isinstance(doc, dict):
            raise ValueError(f"{where}: index shape must be a mapping, got {type(doc).__name__}")
        try:
            return cls(**{k: doc[k] for k in SHAPE_FIELDS if k in doc})
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: bad index shape ({exc})") from None


#: the keys of an IndexShape in metadata (a manifest's, a model's, a shard's)
SHAPE_FIELDS = tuple(f.name for f in fields(IndexShape))
