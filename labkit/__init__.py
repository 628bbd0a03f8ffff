"""The lab's small neutral kit, shared by every floor: atomic files, progress, figures, timing.

It depends on nothing of ours, so ``datamodules``, ``lightning_modules`` and ``reduction`` can
all use it without depending on each other.
"""
