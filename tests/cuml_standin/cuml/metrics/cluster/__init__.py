from cuml.metrics.cluster.silhouette_score import cython_silhouette_score as silhouette_score

__all__ = ["silhouette_score"]
