"""The study's MLP as a LightningModule, and the callbacks its scripts use."""

import os

import lightning  # noqa: F401  (imported first: it sets the variable dropped below)

# Lightning sets PYTORCH_NVML_BASED_CUDA_CHECK=1 on import, so that CUDA checks cannot spoil a
# later fork(). With it, every torch.cuda.is_available() loads NVML anew, and Adam asks on every
# step: ~0.1 ms a step, 10% of a whole training step of this model on CPU. This project never
# forks after touching CUDA (batches come from memory, no DataLoader workers; DDP launches fresh
# processes), so it takes the plain, cached check.
os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)

from lightning_modules.callbacks import EpochTimer, HistoryLogger
from lightning_modules.mlp_module import ACTIVATIONS, MLPClassifier, Normalization, make_optimizer, parameter_report

__all__ = ["ACTIVATIONS", "EpochTimer", "HistoryLogger", "MLPClassifier", "Normalization", "make_optimizer", "parameter_report"]
