from cuml.cluster.kmeans import KMeans

__all__ = ["KMeans"]
