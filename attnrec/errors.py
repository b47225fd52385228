"""One exception tree for the whole product.

Every error we raise on purpose derives from :class:`AttnrecError`. Errors coming from
libraries (redis, onnxruntime, aiokafka, torch) are mapped onto this tree at the boundary
where we call them, so callers catch one family and can tell *transient* failures (worth a
retry) from *permanent* ones (dead-letter or abort).

    AttnrecError
    ├── ConfigError                 bad settings / missing prerequisite (names what to fix)
    ├── StackError                  the local Kafka/Redis stack could not start or stop
    ├── InvalidEventError           an input message violates the event schema (permanent)
    ├── DataError                   a training data file is malformed (names file and line)
    ├── ModelError                  a model could not be trained/exported/loaded
    │   ├── ParityError             torch and onnxruntime disagree beyond the thresholds
    │   └── ModelCheckError         a registry model failed a load-time check (sha, contract, NaN)
    ├── RegistryError               registry layout/manifest problem, unknown version
    └── TransientError              a retryable infrastructure failure (Redis down, timeout, a
        │                           Redis Cluster slot moving: MOVED, ASK, CLUSTERDOWN, TRYAGAIN)
        ├── StateLostError          Redis holds none of attnrec's state (an empty replacement)
        ├── LostWritesError         Redis lost writes it had acknowledged (a failover to a replica
        │                           that had not received them)
        └── FencedError             exactly-once: the worker's transactional producer was fenced
"""

from __future__ import annotations

__all__ = [
    "AttnrecError",
    "ConfigError",
    "StackError",
    "InvalidEventError",
    "DataError",
    "ModelError",
    "ParityError",
    "ModelCheckError",
    "RegistryError",
    "TransientError",
    "StateLostError",
    "LostWritesError",
    "FencedError",
]


class AttnrecError(Exception):
    """Base class of every error attnrec raises on purpose."""


class ConfigError(AttnrecError):
    """Settings are invalid or a prerequisite is missing; the message names the fix."""


class StackError(AttnrecError):
    """The local stack (Kafka, Redis) failed to start, stop or answer."""


class InvalidEventError(AttnrecError):
    """An input message is not a valid click event. Permanent: goes to the dead-letter topic."""


class DataError(AttnrecError):
    """A training/evaluation data file is malformed. The message names the file and line."""


class ModelError(AttnrecError):
    """A model could not be trained, exported or loaded."""


class ParityError(ModelError):
    """The exported ONNX model does not reproduce the torch model within the thresholds."""


class ModelCheckError(ModelError):
    """A registry model failed a load-time check (sha256, contract, golden input, NaN)."""


class RegistryError(AttnrecError):
    """The model registry is malformed, or a version does not exist."""


class TransientError(AttnrecError):
    """A retryable infrastructure failure (connection reset, timeout, server loading)."""


class StateLostError(TransientError):
    """Redis answers but holds none of attnrec's state (its marker key is gone: a restart without
    persistence, or a failover to an empty replica). The worker pauses rather than apply events
    to empty buffers; the message says what the operator can do."""


class LostWritesError(TransientError):
    """Redis answers and holds attnrec's state, but no longer holds writes it acknowledged to
    this worker: a partition's applied offset in a slot is below what this worker applied there
    (a failover to a replica that had not received the last writes, a restart that lost the
    AOF's tail). Those events' offsets may already be committed, so Kafka will not bring them
    back: the worker pauses rather than serve from buffers that miss them; the message names
    the partitions and the offsets to replay from."""


class FencedError(TransientError):
    """Exactly-once: a transactional producer of the worker was fenced (another producer with
    its transactional id started after it, or the broker timed its transaction out). The
    batch's part is redone with a new producer, or given up when its partition moved."""
