"""Offline training: datasets and splits, the attention model, the training loop, full-ranking
evaluation and baselines; the simulated event streams it is tried on are in ``sim/``.

Modules (import them directly; this package imports nothing so that the torch-free parts stay
torch-free):

- ``attnrec.training.config``     ``ModelConfig``, ``TrainConfig``: every training option, declared once (torch-free)
- ``attnrec.training.settings``   ``TrainingSettings``: the settings and flags of train/eval, derived from the configs (torch-free)
- ``attnrec.training.cli``        the ``attnrec train`` / ``attnrec eval`` commands (torch imported lazily)
- ``attnrec.training.features``   feature encoding with the vocabularies of ``attnrec.manifest`` (torch-free)
- ``attnrec.training.data``       loaders (s3, gsasrec, events, the event logs), vocabulary, leave-one-out split, sparsity
- ``attnrec.training.eventfiles`` files of our event schema (JSONL, CSV, Parquet) (torch-free)
- ``attnrec.training.logs``       event logs users bring: yoochoose, Taobao, DIGINETICA, any CSV/JSONL with a mapping (torch-free)
- ``attnrec.training.defaults``   ``default_configs``: the configurations chosen from the data, with their evidence
- ``attnrec.training.model``      ``AttnRec``, the model
- ``attnrec.training.train``      ``train``, ``fit_and_evaluate`` (the pipeline), the losses and training rows
- ``attnrec.training.evaluate``   ``evaluate`` (one seeded function, parameterised by split), baselines' scorers
- ``attnrec.training.checkpoint`` ``save_checkpoint``, ``load_checkpoint``
- ``attnrec.training.attention``  planted-cause hit rate and faithfulness of the attention on synthetic data
- ``attnrec.training.sim``        simulated streams: planted causes, item content, live commerce (torch-free)
"""

__all__: list[str] = []
