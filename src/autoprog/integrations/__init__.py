"""Integrations with training frameworks.

- :mod:`autoprog.integrations.lightning`: Lightning callbacks, :class:`AutoProgCallback` (progressive
  pre-training: Prog / AutoProg-One, paper Sec. 3) and :class:`ProgressiveUnfreezing` (progressive
  fine-tuning: Prog / AutoProg-Zero, Sec. 4). Needs ``pip install autoprog[lightning]``.

Submodules are imported explicitly, so ``import autoprog.integrations`` needs none of the frameworks.
"""
