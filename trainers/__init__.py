"""Learning: torch training of encoders (GSL, Quantization Networks, Structured
Multi-Hashing) and the held-out validation of a trained model.

What a query or an encode worker runs (the deployed encoders, codebook training with
faiss) lives in indexer/; this package imports indexer/ and shards/, never cluster/.
"""
from trainers.encoder_config import EncoderConfig, EncoderKind, check_config, encoder_config_from_spec
from trainers.gsl_training import EncoderNet, train_gsl
from trainers.model_version import train_model_version
from trainers.train_encoder import train_encoder
from trainers.validation import HeldOut, hold_out, split_rows, validation_recall

__all__ = [
    "EncoderConfig",
    "EncoderKind",
    "EncoderNet",
    "HeldOut",
    "check_config",
    "encoder_config_from_spec",
    "hold_out",
    "split_rows",
    "train_encoder",
    "train_gsl",
    "train_model_version",
    "validation_recall",
]
