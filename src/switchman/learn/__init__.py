"""switchman.learn"""

from ._embedders import Embedder, available_embedders, get_embedder

__all__ = ["Embedder", "available_embedders", "get_embedder"]
