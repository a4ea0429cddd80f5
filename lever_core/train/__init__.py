"""The shared training loop (``lever.train``): one loop every backbone plugs into through the
:class:`Backbone` contract, multi-process data parallel under torchrun, ``lever train`` and
``lever predict``.

Quick use::

    from lever.train import TrainParams, train
    train(TrainParams(data="runs/wordnet", backbone="generic", out="runs/generic_base"))
"""

from __future__ import annotations

from lever.utils.lazy import lazy_exports

# Loaded on first use, so the CLI can read TrainParams' fields without importing torch.
_LAZY = {
    "available_backbones": "lever.hooks.registry",
    "AmpContext": "lever.train.backbone",
    "Backbone": "lever.train.backbone",
    "BuildContext": "lever.train.backbone",
    "ParamGroup": "lever.train.backbone",
    "Stage": "lever.train.backbone",
    "Trainer": "lever.train.loop",
    "TrainResult": "lever.train.loop",
    "load_trained": "lever.train.loop",
    "train": "lever.train.loop",
    "TrainParams": "lever.train.params",
    "LeverParams": "lever.train.params",
    "OptimParams": "lever.train.params",
    "RunParams": "lever.train.params",
    "predict_topk": "lever.train.predict",
    "topk_to_csr": "lever.train.predict",
    "Batch": "lever.train.rows",
    "GlobalBatchSampler": "lever.train.rows",
    "TrainRows": "lever.train.rows",
}

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)

__all__ = [
    "AmpContext",
    "Backbone",
    "Batch",
    "BuildContext",
    "GlobalBatchSampler",
    "LeverParams",
    "OptimParams",
    "ParamGroup",
    "RunParams",
    "Stage",
    "TrainParams",
    "TrainResult",
    "TrainRows",
    "Trainer",
    "available_backbones",
    "load_trained",
    "predict_topk",
    "topk_to_csr",
    "train",
]
