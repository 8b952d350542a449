"""switchman.learn"""

from ._embedders import available_embedders, get_embedder
from ._embedding import Embedder

__all__ = ["Embedder", "available_embedders", "get_embedder"]
