from cuml.manifold.t_sne import TSNE

__all__ = ["TSNE"]
