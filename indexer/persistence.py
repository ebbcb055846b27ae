"""A VLQIndex to and from what shards/ stores: its model metadata, `IndexArrays` out and
in, an index around a trained model. The bodies of VLQIndex's persistence methods
(`model_meta`, `from_trained`, `to_arrays`, `from_arrays`), which call these."""
from __future__ import annotations

from indexer.encoders import encoder_from_arrays
from indexer.quantizer import VLQQuantizer
from shards import IndexArrays
from shards.models import check_model
from shards.vector_store import store_of


def model_meta(index) -> dict:
    """A model version's metadata: the shape (with the metric), the training seed, the
    encoder."""
    return {"shape": index.shape.to_dict(), "seed": index.seed,
            "encoder": index.encoder.describe()}


def index_from_trained(cls, encoder, quantizer: VLQQuantizer, **kwargs):
    """An empty `cls` index around an encoder and a quantizer trained on its output."""
    index = cls(encoder.dim, quantizer.nlist, quantizer.nedge, quantizer.code_bytes,
                quantizer.lambda_values.size, pq_bits=quantizer.pq_bits, encoder=encoder,
                **kwargs)
    if quantizer.dim != index.code_dim:
        raise ValueError(f"quantizer is {quantizer.dim}-d, the encoder outputs {index.code_dim}-d")
    index.quantizer = quantizer
    return index


def index_to_arrays(index) -> IndexArrays:
    """The model, the encoded rows and (with a vector store) the stored vectors, row-aligned."""
    index._require_trained("save")
    lists = index.lists
    lists.compact()
    lists.purge()        # removed rows are not stored
    return IndexArrays(model_meta=index.model_meta(), model_arrays=index._model_arrays(),
                       ids=lists.ids, list_ids=lists.list_ids(), lambda_idx=lists.lambda_idx,
                       codes=lists.codes, next_id=index._next_id, vectors=lists.vectors,
                       attributes=lists.attributes)


def index_from_arrays(cls, data: IndexArrays, *, backend, device, stored_vectors=None):
    """An index from a model and encoded rows (checked as `add_encoded` checks them); the
    vector store is `stored_vectors`, or else the dtype of `data.vectors` (none without)."""
    meta, arrays = data.model_meta, data.model_arrays
    shape = check_model(meta, arrays, "model")
    vectors = getattr(data, "vectors", None)
    if stored_vectors is None and vectors is not None:
        stored_vectors = store_of(vectors, shape.dim)
    index = cls(shape.dim, shape.nlist, shape.nedge, shape.code_bytes, shape.nlambda,
                pq_bits=shape.pq_bits, encoder=encoder_from_arrays(meta, arrays),
                seed=meta.get("seed", 0), metric=shape.metric, stored_vectors=stored_vectors,
                backend=backend, device=device)
    if index.shape != shape:
        raise ValueError(f"the model's encoder gives shape {index.shape}, its metadata "
                         f"says {shape}")
    index.quantizer = VLQQuantizer(**{name: arrays[name] for name in
                                      ("centroids", "edges", "edge_len2",
                                       "lambda_values", "pq_codebook")})
    if data.ids.shape[0]:
        index.add_encoded(data.list_ids, data.lambda_idx, data.codes, data.ids,
                          vectors=vectors, attributes=getattr(data, "attributes", None))
    index._next_id = max(int(data.next_id), index._next_id)
    index.lists.compact()
    return index
