"""The fused learning-rate sweep: many independent MLPs trained as one LightningModule.

One room per idea:

* :mod:`~lightning_modules.fused.model`: the stacked model, :class:`FusedMLPs`, and its members;
* :mod:`~lightning_modules.fused.adam`: its optimizer, :class:`MemberAdam`, each member's own Adam;
* :mod:`~lightning_modules.fused.backward`: the gradients written out by hand (CPU, ReLU and linear);
* :mod:`~lightning_modules.fused.graph`: the training step recorded as a CUDA graph;
* :mod:`~lightning_modules.fused.train`: :func:`build_fused` and :func:`train_fused`, the driver.
"""

from lightning_modules.fused.adam import MemberAdam
from lightning_modules.fused.model import FusedMLPs, MemberSpec, member_specs, solo_initial_state
from lightning_modules.fused.train import BATCHES_PER_STEP, build_fused, train_fused

__all__ = ["BATCHES_PER_STEP", "FusedMLPs", "MemberAdam", "MemberSpec", "build_fused", "member_specs", "solo_initial_state",
           "train_fused"]
