"""XC data formats, datasets and the built-in WordNet and FOLDOC datasets.

Names load on first use so that ``lever --help`` (which imports ``lever.data.cli``) does not pay
for numpy/scipy.
"""

from __future__ import annotations

from lever.utils.lazy import lazy_exports

_LAZY = {
    "DatasetMeta": "lever.data.dataset",
    "LabelAugmentedTrain": "lever.data.dataset",
    "XCDataset": "lever.data.dataset",
    "write_dataset": "lever.data.dataset",
    "JsonCorpus": "lever.data.formats",
    "XCFormatError": "lever.data.formats",
    "binarize": "lever.data.formats",
    "read_filter": "lever.data.formats",
    "read_json_corpus": "lever.data.formats",
    "read_legacy": "lever.data.formats",
    "read_matrix": "lever.data.formats",
    "read_npz": "lever.data.formats",
    "read_sparse_text": "lever.data.formats",
    "read_texts": "lever.data.formats",
    "write_filter": "lever.data.formats",
    "write_json_corpus": "lever.data.formats",
    "write_legacy": "lever.data.formats",
    "write_matrix": "lever.data.formats",
    "write_npz": "lever.data.formats",
    "write_sparse_text": "lever.data.formats",
    "write_texts": "lever.data.formats",
    "synthetic_dataset": "lever.data.synthetic",
    "dataset_stats": "lever.data.stats",
    "build_wordnet_dataset": "lever.data.wordnet",
    "build_foldoc_dataset": "lever.data.foldoc",
}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)

__all__ = list(_LAZY)
