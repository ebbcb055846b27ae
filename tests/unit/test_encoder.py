"""Encoder configs, the OPQ baseline and GSL training reproducibility (CPU, seeded)."""
import numpy as np
import pytest

from indexer.encoders import IdentityEncoder, LinearEncoder, encoder_from_arrays, train_opq
from shards.shape import IndexShape
from trainers.train_encoder import EncoderConfig, check_config, train_encoder


@pytest.mark.parametrize("kwargs, match", [
    ({"kind": "pca"}, "kind must be"),
    ({"rounds": 0}, "rounds must be a positive integer"),
    ({"batch_size": -5}, "batch_size must be a positive integer"),
    ({"beta": 1.5}, "beta must lie in"),
    ({"beta": -0.1}, "beta must lie in"),
    ({"dim_out": -3}, "dim_out must be a positive integer"),
    ({"validation_fraction": 1.0}, "validation_fraction"),
])
def test_bad_config_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EncoderConfig(**kwargs)


def test_config_must_fit_the_index():
    with pytest.raises(ValueError, match="exceeds the input dimension"):
        check_config(EncoderConfig(kind="gsl", dim_out=64), IndexShape(32, 8, 4, 8))
    with pytest.raises(ValueError, match="must divide the encoder output dimension 30"):
        check_config(EncoderConfig(kind="gsl", dim_out=30), IndexShape(32, 8, 4, 8))


def test_opq_is_a_rotation_and_round_trips(small_data):
    enc = train_opq(small_data["learn"][:3000], pq_m=8)
    w = enc.weight
    np.testing.assert_allclose(w @ w.T, np.eye(w.shape[0]), atol=1e-4)
    again = encoder_from_arrays({"dim": 32, "encoder": enc.describe()}, enc.to_arrays())
    np.testing.assert_array_equal(again.encode(small_data["query"]), enc.encode(small_data["query"]))
    assert isinstance(encoder_from_arrays({"dim": 32}, {}), IdentityEncoder)
    with pytest.raises(ValueError, match="d_out <= d"):
        LinearEncoder(np.zeros((40, 32), np.float32))


def test_gsl_training_is_reproducible(small_data):
    x = small_data["learn"][:3000]
    cfg = EncoderConfig(kind="gsl", rounds=1, epochs=1, batch_size=512, lr=1e-3, seed=3)
    shape = IndexShape(dim=32, nlist=8, nedge=4, code_bytes=8, nlambda=16)
    enc1, _, m1 = train_encoder(x, shape, cfg)
    enc2, _, m2 = train_encoder(x, shape, cfg)
    np.testing.assert_array_equal(enc1.weight, enc2.weight)
    assert m1["rounds"] == m2["rounds"] and len(m1["rounds"]) == 2


def test_index_with_encoder_saves_and_loads_it(small_data, tmp_path):
    from indexer import VLQIndex

    enc = train_opq(small_data["learn"][:3000], pq_m=8, dim_out=16)
    index = VLQIndex(32, nlist=16, nedge=4, code_bytes=8, nlambda=32, encoder=enc)
    assert index.code_dim == 16
    index.train(small_data["learn"][:3000])
    index.add(small_data["base"][:2000])
    q = small_data["query"]
    d0, i0 = index.search(q, k=5, nprobe=4, nlines=8)
    index.save(str(tmp_path / "idx"))
    loaded = VLQIndex.load(str(tmp_path / "idx"))
    assert loaded.encoder.kind == "opq" and loaded.code_dim == 16
    d1, i1 = loaded.search(q, k=5, nprobe=4, nlines=8)
    np.testing.assert_array_equal(i0, i1)
    np.testing.assert_array_equal(d0, d1)
    with pytest.raises(ValueError, match="encoder takes 32-d input, the index has dim=64"):
        VLQIndex(64, nlist=16, nedge=4, code_bytes=8, encoder=enc)
    with pytest.raises(ValueError, match="code_bytes=6 must divide dim=16"):
        VLQIndex(32, nlist=16, nedge=4, code_bytes=6, encoder=enc)


@pytest.mark.parametrize("kwargs, match", [
    ({"kind": "gsl", "qn_weight_bits": 1, "qn_activation_bits": 8}, "qn_weight_bits must be"),
    ({"kind": "gsl", "qn_weight_bits": 8}, "must be set together"),
    ({"kind": "gsl", "smh_fraction": 0.0}, "smh_fraction must lie in"),
    ({"kind": "gsl", "smh_fraction": 1.5}, "smh_fraction must lie in"),
    ({"kind": "opq", "smh_fraction": 0.5}, "train with kind='gsl'"),
    ({"kind": "gsl", "qn_temperature_start": 5.0, "qn_temperature_end": 1.0}, "qn_temperature"),
])
def test_bad_qn_smh_config_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EncoderConfig(**kwargs)


@pytest.mark.parametrize("extra", [{"qn_weight_bits": 4, "qn_activation_bits": 8},
                                   {"smh_fraction": 0.25}])
def test_quantized_and_hashed_encoders_deploy(small_data, tmp_path, extra):
    from indexer import VLQIndex
    from indexer.encoders import QuantizedEncoder

    x = small_data["learn"][:3000]
    cfg = EncoderConfig(kind="gsl", rounds=1, epochs=1, batch_size=512, seed=1, **extra)
    enc, quantizer, metrics = train_encoder(x, IndexShape(32, 8, 4, 8, 16), cfg)
    desc = enc.describe()
    if "smh_fraction" in extra:
        # 2 * m * r trainable numbers for a 32 x 32 weight (m = 32): r = 4 at fraction 0.25
        assert desc["parameters"] == 2 * 32 * 4
    else:
        assert isinstance(enc, QuantizedEncoder) and desc["weight_bits"] == 4
        assert np.abs(enc.weight_codes).max() <= 7
    index = VLQIndex.from_trained(enc, quantizer)
    index.add(small_data["base"][:1000])
    index.save(str(tmp_path / "idx"))
    loaded = VLQIndex.load(str(tmp_path / "idx"))
    q = small_data["query"][:20]
    np.testing.assert_array_equal(loaded.encoder.encode(q), enc.encode(q))
    np.testing.assert_array_equal(loaded.search(q, k=5, nprobe=4, nlines=8)[1],
                                  index.search(q, k=5, nprobe=4, nlines=8)[1])


def test_deployed_integer_encoder_equals_the_trained_hard_forward(small_data):
    import torch

    from trainers.gsl_training import EncoderNet

    x = small_data["learn"][:2000]
    init = train_opq(x, pq_m=8).weight
    net = EncoderNet(init, EncoderConfig(kind="gsl", qn_weight_bits=8, qn_activation_bits=8))
    net.layer.calibrate(torch.from_numpy(x))
    net.layer.hard_mode(True)
    deployed = net.export({})
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(deployed.encode(x), want, rtol=1e-5, atol=1e-4)
    # and it is a quantization of the float map, not something else
    rel = np.linalg.norm(deployed.encode(x) - x @ init.T) / np.linalg.norm(x @ init.T)
    assert rel < 0.02


def test_exported_encoder_does_not_share_the_trained_weight():
    """The kept (best-round) encoder must not change when training goes on: its weight is
    what the model file stores."""
    import torch

    from trainers.gsl_training import EncoderNet

    w0 = np.linalg.qr(np.random.default_rng(0).normal(size=(8, 8)))[0].astype(np.float32)
    net = EncoderNet(w0, EncoderConfig(kind="gsl"))
    exported = net.export({})
    with torch.no_grad():
        net.layer.weight.add_(1.0)
    np.testing.assert_array_equal(exported.weight, w0)
