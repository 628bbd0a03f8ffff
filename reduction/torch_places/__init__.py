"""The study's algorithms written for torch, so that they run on any torch device (a CUDA GPU included).

* :mod:`reduction.torch_places.smacof`: metric MDS by SMACOF, all starts as one batched tensor
  program, scikit-learn 1.9's algorithm and stopping rule per start (:class:`TorchSMACOF`).
* :mod:`reduction.torch_places.tsne`: t-SNE through TorchDR, called so that its parameters mean
  what scikit-learn's mean (:func:`torchdr_tsne_kwargs`, :class:`TorchDRTSNE`).

Both classes are scikit-learn-shaped (parameters stored in ``__init__``, ``fit_transform``
returning NumPy, fitted attributes ending in ``_``), like the scikit-learn classes that
:mod:`reduction.backend` hands out, and take the same keyword arguments as those plus
``device`` and ``dtype``.
"""
