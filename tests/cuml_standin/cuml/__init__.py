"""A stand-in for RAPIDS cuML, for tests only (see ../README.md): cuML 26.10's signatures and
conventions for what sign-mnist-lab calls, computed with scikit-learn on the CPU.

Signatures were copied from rapidsai/cuml at commit 342457bc (2026-08-07; VERSION 26.10.00, the
26.10 development tree; the constructors are the same as in the v26.08.00 tag).
"""

from cuml._version import __git_commit__, __version__
from cuml.cluster.kmeans import KMeans
from cuml.decomposition.pca import PCA
from cuml.ensemble.randomforestclassifier import RandomForestClassifier
from cuml.manifold.t_sne import TSNE

STANDIN = True  # real cuML has no such name: tests check they are talking to the stand-in

__all__ = ["KMeans", "PCA", "RandomForestClassifier", "STANDIN", "TSNE", "__git_commit__", "__version__"]
