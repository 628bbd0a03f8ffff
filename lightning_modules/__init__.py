"""The study's MLP as a LightningModule, and the callbacks its scripts use."""

from lightning_modules.callbacks import EpochTimer, HistoryLogger
from lightning_modules.mlp_module import ACTIVATIONS, MLPClassifier, Normalization, make_optimizer, parameter_report

__all__ = ["ACTIVATIONS", "EpochTimer", "HistoryLogger", "MLPClassifier", "Normalization", "make_optimizer", "parameter_report"]
