"""The shared training loop (``lever.train``): one loop every backbone plugs into through the
:class:`Backbone` contract, multi-process data parallel under torchrun, ``lever train`` and
``lever predict``.

Quick use::

    from lever.train import TrainParams, train
    train(TrainParams(data="runs/wordnet", backbone="generic", out="runs/generic_base"))
"""

from __future__ import annotations

from lever.hooks.registry import available_backbones
from lever.train.backbone import AmpContext, Backbone, BuildContext, ParamGroup
from lever.train.loop import TrainResult, load_trained, train
from lever.train.params import TrainParams
from lever.train.predict import predict_topk, topk_to_csr
from lever.train.rows import Batch, GlobalBatchSampler, TrainRows

__all__ = [
    "AmpContext",
    "Backbone",
    "Batch",
    "BuildContext",
    "GlobalBatchSampler",
    "ParamGroup",
    "TrainParams",
    "TrainResult",
    "TrainRows",
    "available_backbones",
    "load_trained",
    "predict_topk",
    "topk_to_csr",
    "train",
]
