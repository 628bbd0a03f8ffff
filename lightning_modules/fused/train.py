"""Training a fused sweep: build the stacked model, fit all members on the Sign-MNIST splits, test."""

from __future__ import annotations

from collections.abc import Sequence

from lightning_modules.fused.model import FusedMLPs, MemberSpec
from lightning_modules.training import TrainConfig, datamodule_for, fit_and_test, flush_denormals

BATCHES_PER_STEP = 16  # train_fused's batches per Lightning step (GroupedBatches)


def build_fused(
    members: Sequence[MemberSpec | dict], train_images=None, num_classes: int = 25, input_dim: int = 784, hidden=(200, 50),
    cuda_graphs: bool = True, explicit_gradients: bool = True,
) -> FusedMLPs:
    """A :class:`FusedMLPs` whose members start as solo ``MLPClassifier`` s under their seeds,
    adapted on ``train_images`` when given."""
    model = FusedMLPs(members, num_classes=num_classes, input_dim=input_dim, hidden=tuple(hidden), cuda_graphs=cuda_graphs,
                      explicit_gradients=explicit_gradients)
    return model.adapt(train_images) if train_images is not None else model


def train_fused(
    members: Sequence[MemberSpec | dict],
    config: TrainConfig | None = None,
    *,
    logger=False,
    callbacks: Sequence = (),
    test: bool = True,
    batches_per_step: int = BATCHES_PER_STEP,
    cuda_graphs: bool = True,
    explicit_gradients: bool = True,
) -> dict:
    """Fit all members together on the Sign-MNIST splits (validation every epoch), then test.

    Parameters
    ----------
    members
        The members, as for :class:`FusedMLPs`; results come back in this order.
    config
        The settings ``train_mlp`` takes (default ``TrainConfig()``): data, epochs, batch size,
        devices, augmentation, denormals. Its ``seed`` sets the split and the batch order, each
        member's own seed its initialisation; its ``lr`` and ``act`` are the members', and its
        output settings (``logdir``, ``name``, ``pictures``, ``histograms``, ``echo``) are for
        the caller, who gives the loggers.
    logger, callbacks
        Lightning loggers, and callbacks besides the timer and the interrupt watch.
    test
        Run the test split after fitting.
    batches_per_step
        Batches per Lightning step, each with its own optimizer step.
    cuda_graphs, explicit_gradients
        See :class:`FusedMLPs`.

    Returns
    -------
    dict
        ``model``; ``members`` (:meth:`FusedMLPs.member_results` per member, each with the fused
        epoch time as ``seconds_per_epoch``); ``seconds_per_epoch`` (median training epoch,
        validation excluded, all members together); ``train_seconds`` (every epoch);
        ``total_seconds`` (fit and test); ``device``; ``world_size``; ``optimizer_steps``;
        ``graph_steps`` (those taken by replaying a CUDA graph); ``datamodule``; ``fit`` (the
        :class:`~lightning_modules.training.Fit`).
    """
    config = config if config is not None else TrainConfig()
    # Whole, data loading included: torch's worker threads take the setting when they start.
    with flush_denormals(config.flush_denormal):
        datamodule = datamodule_for(config, batches_per_step=batches_per_step)
        model = build_fused(members, datamodule.train_images, num_classes=datamodule.num_classes, cuda_graphs=cuda_graphs,
                            explicit_gradients=explicit_gradients)
        fit = fit_and_test(config, model, datamodule, logger=logger, callbacks=callbacks, test=test)
    seconds_per_epoch = fit.seconds_per_epoch
    return {
        "model": model,
        "members": [model.member_results(i) | {"seconds_per_epoch": seconds_per_epoch} for i in range(model.num_members)],
        "seconds_per_epoch": seconds_per_epoch,
        "train_seconds": fit.train_seconds,
        "total_seconds": fit.total_seconds,
        "device": fit.device,
        "world_size": fit.trainer.world_size,
        "optimizer_steps": fit.trainer.global_step,
        "graph_steps": model.graph_steps,
        "datamodule": datamodule,
        "fit": fit,
    }
