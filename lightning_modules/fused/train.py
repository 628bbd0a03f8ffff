"""Training a fused sweep: build the stacked model, fit all members on the Sign-MNIST splits, test."""

from __future__ import annotations

from collections.abc import Sequence

from lightning_modules.fused.model import FusedMLPs, MemberSpec
from lightning_modules.training import flush_denormals

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
    *,
    data_dir=None,
    epochs: int = 100,
    batch_size: int = 32,
    data_seed: int = 22,
    limit_rows: int | None = None,
    accelerator: str = "auto",
    devices: int | str = 1,
    strategy: str = "auto",
    logger=False,
    callbacks: Sequence = (),
    test: bool = True,
    augment=None,
    batches_per_step: int = BATCHES_PER_STEP,
    cuda_graphs: bool = True,
    explicit_gradients: bool = True,
    flush_denormal: bool = True,
) -> dict:
    """Fit all members together on the Sign-MNIST splits (validation every epoch), then test.

    Parameters
    ----------
    members
        The members, as for :class:`FusedMLPs`; results come back in this order.
    data_seed
        Sets the split and the batch order (``train_mlp``'s ``seed`` sets these and the
        initialisation; here each member's own seed sets its initialisation).
    augment
        An ``AugmentConfig`` for the training batches, as ``train_mlp`` takes.
    batches_per_step
        Batches per Lightning step, each with its own optimizer step.
    cuda_graphs, explicit_gradients
        See :class:`FusedMLPs`.
    flush_denormal
        See ``training.flush_denormals`` (on by default, as in ``train_mlp``).
    data_dir, epochs, batch_size, limit_rows, accelerator, devices, strategy, logger, callbacks
        As for ``train_mlp`` and ``lightning.Trainer``; ``test`` runs the test split after fitting.

    Returns
    -------
    dict
        ``model``; ``members`` (:meth:`FusedMLPs.member_results` per member, each with the fused
        epoch time as ``seconds_per_epoch``); ``seconds_per_epoch`` (median training epoch,
        validation excluded, all members together); ``train_seconds`` (every epoch);
        ``total_seconds`` (fit and test); ``device``; ``world_size``; ``optimizer_steps``;
        ``graph_steps`` (those taken by replaying a CUDA graph); ``datamodule``.
    """
    import statistics
    import time
    import warnings

    import lightning as L

    from datamodules import SignMNISTDataModule
    from lightning_modules.callbacks import EpochTimer
    from lightning_modules.training import device_description

    # Whole, data loading included: torch's worker threads take the setting when they start.
    with flush_denormals(flush_denormal):
        datamodule = SignMNISTDataModule(data_dir, batch_size=batch_size, seed=data_seed, limit_rows=limit_rows, augment=augment,
                                         batches_per_step=batches_per_step)
        datamodule.prepare_data()
        datamodule.setup("fit")
        model = build_fused(members, datamodule.train_images, num_classes=datamodule.num_classes, cuda_graphs=cuda_graphs,
                            explicit_gradients=explicit_gradients)
        timer = EpochTimer()
        trainer = L.Trainer(
            max_epochs=epochs,
            accelerator=accelerator,
            devices=devices,
            strategy=strategy,
            logger=logger,
            callbacks=[timer, *callbacks],
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            log_every_n_steps=50,
        )
        started = time.perf_counter()
        with warnings.catch_warnings():
            # As in train_mlp: batches are in-memory tensors, metrics are logged per epoch.
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
            warnings.filterwarnings("ignore", message=".*treespec, LeafSpec.*")
            trainer.fit(model, datamodule)
            if test:
                trainer.test(model, datamodule, verbose=False)
        total_seconds = time.perf_counter() - started
        seconds_per_epoch = statistics.median(timer.train_seconds) if timer.train_seconds else None
        results = [model.member_results(i) | {"seconds_per_epoch": seconds_per_epoch} for i in range(model.num_members)]
        return {
            "model": model,
            "members": results,
            "seconds_per_epoch": seconds_per_epoch,
            "train_seconds": list(timer.train_seconds),
            "total_seconds": total_seconds,
            "device": device_description(trainer),
            "world_size": trainer.world_size,
            "optimizer_steps": trainer.global_step,
            "graph_steps": model.graph_steps,
            "datamodule": datamodule,
        }
