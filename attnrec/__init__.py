"""attnrec: a real-time attention-based recommender for event streams.

One installed name. This folder is the base every part shares (the exception tree, the
settings, the event schema, the model contract and registry, the Kafka and Redis clients);
the repository's other folders are its subpackages: ``attnrec.stream`` (``stream/``, the
online worker), ``attnrec.training`` (``training/``), ``attnrec.exporter`` (``exporter/``)
and ``attnrec.apps`` (``apps/``, the commands). A built wheel places them under ``attnrec/``
(pyproject's ``package-dir``); in a source checkout the lines below give the same names,
so a checkout runs without installing (``PYTHONPATH=. python -m attnrec.apps worker``).
"""

from pathlib import Path as _Path

__version__ = "0.1.0"
__all__ = ["__version__"]

_checkout = _Path(__file__).resolve().parent.parent
if (_checkout / "stream" / "__init__.py").is_file() and (_checkout / "pyproject.toml").is_file():
    __path__.append(str(_checkout))  # noqa: F821  (attnrec.stream -> <checkout>/stream, ...)
del _Path, _checkout
