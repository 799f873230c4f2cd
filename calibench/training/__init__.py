"""Training one run; one-way imports, top to bottom:

- :mod:`~calibench.training.progress`: :class:`TrainCallback` (the trainer's progress callbacks,
  no-op methods) and :class:`RichProgress` (a rich bar); torch-free, so the sweep runner's
  ``ProgressWriter`` subclasses it without loading torch.
- :mod:`~calibench.training.checkpoint`: checkpoints (after an epoch or mid-epoch), written
  atomically, corrupt ones set aside.
- :mod:`~calibench.training.step`: :class:`TrainStep`, one SGD step, the unit the speed
  benchmarks time.
- :mod:`~calibench.training.trainer`: :func:`train`, build -> resume -> epoch loop.

Import from the modules (``from calibench.training.trainer import train``); this package imports
nothing, so importing the progress callbacks does not import torch.
"""

#: Default seconds between time-based checkpoints (``calibench run --checkpoint-every``).
CHECKPOINT_EVERY_S = 300.0
