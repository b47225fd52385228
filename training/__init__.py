"""Offline training: datasets and splits, the attention model, the training loop, full-ranking
evaluation, baselines and the synthetic event generator.

Modules (import them directly; this package imports nothing so that the torch-free parts stay
torch-free):

- ``training.features``   feature encoding with the vocabularies of ``attnrec.manifest`` (torch-free)
- ``training.synth``      synthetic click events with planted causes (torch-free)
- ``training.cli``        the ``attnrec train`` / ``attnrec eval`` commands (torch imported lazily)
- ``training.data``       loaders (s3, gsasrec, events), vocabulary, leave-one-out split
- ``training.model``      ``ModelConfig``, ``AttnRec``
- ``training.train``      ``TrainConfig``, ``default_configs``, ``train``, ``fit_and_evaluate`` (the pipeline)
- ``training.evaluate``   ``evaluate`` (one seeded function, parameterised by split), baselines' scorers
- ``training.checkpoint`` ``save_checkpoint``, ``load_checkpoint``
- ``training.attention``  planted-cause hit rate and faithfulness of the attention on synthetic data
"""

__all__: list[str] = []
