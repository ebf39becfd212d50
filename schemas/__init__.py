"""The wire contract: Avro schemas, the JSON form, and the codec between them and the domain."""

from schemas.codec import (
    AVRO_MAGIC,
    Codec,
    DecodeError,
    InvalidStep,
    NotAStep,
    TruncatedValue,
    UnknownSchema,
    UnknownStepType,
    encode_json,
)

__all__ = [
    "AVRO_MAGIC",
    "Codec",
    "DecodeError",
    "InvalidStep",
    "NotAStep",
    "TruncatedValue",
    "UnknownSchema",
    "UnknownStepType",
    "encode_json",
]
