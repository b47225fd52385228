"""Simulated event streams, for the demos, the tests and the measurements (torch-free): not
training, but what training and the worker are tried on.

- ``attnrec.training.sim.synth``         synthetic click events with planted causes (a follow-up item)
- ``attnrec.training.sim.content``       synthetic events driven by item content, and its attribute file
- ``attnrec.training.sim.world``         the live-commerce world: rooms, products, videos, users
- ``attnrec.training.sim.live``          its event stream: clicks and catalog events, bursts, planted rules
- ``attnrec.training.sim.availability``  item availability from catalog events, at any moment

This package imports nothing, so each module stays as light as its own imports.
"""

__all__: list[str] = []
