from cuml.decomposition.pca import PCA

__all__ = ["PCA"]
