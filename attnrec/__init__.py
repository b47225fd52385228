"""attnrec: a real-time attention-based recommender for event streams.

The top-level package holds what every part shares: the exception tree, settings helpers,
the command line and the local stack manager. The online path lives in ``stream``, offline
training in ``training``, export and the model registry in ``exporter``.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
