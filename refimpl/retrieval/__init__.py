"""Cascaded category-to-item retrieval (ULIM 2.2.2), on an exact NumPy back end and on hnswlib.

    catalogue = Catalogue.build(item_vectors, item_categories)          # (I, D), (I,)
    index = ExactIndex(catalogue)            # or HnswIndex(catalogue, HnswConfig(ef=400))
    result = cascade_retrieve(index, top_categories, long_vectors, short_vectors,
                              CascadeConfig(n=500), long_mask=has_history)
    result.ids  # (B, N) item ids; result.valid (B, N); result.routes (B, N); result.quotas

See spec/retrieval.md for the quota rule, the merge order and every edge case.
"""

from refimpl.retrieval.cascade import (
    PAD_ROUTE,
    SHORT_ROUTE,
    CascadeConfig,
    CascadeResult,
    cascade_recall,
    cascade_retrieve,
    split_evenly,
    split_weighted,
)
from refimpl.retrieval.catalogue import Catalogue
from refimpl.retrieval.exact import ExactIndex
from refimpl.retrieval.hnsw import HnswConfig, HnswIndex
from refimpl.retrieval.index import SearchIndex

__all__ = [
    "PAD_ROUTE",
    "SHORT_ROUTE",
    "CascadeConfig",
    "CascadeResult",
    "Catalogue",
    "ExactIndex",
    "HnswConfig",
    "HnswIndex",
    "SearchIndex",
    "cascade_recall",
    "cascade_retrieve",
    "split_evenly",
    "split_weighted",
]
