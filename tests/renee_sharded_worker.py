"""Worker for tests/test_renee_sharded.py: a few Renée steps on a synthetic dataset, run either as
one process or under ``torchrun`` with the classifier's labels split across processes (gloo).
Writes the gathered classifier, the encoder weights and the per-step losses to OUT (safetensors).

usage: python tests/renee_sharded_worker.py DATA_DIR OUT [STEPS]
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch
from safetensors.torch import save_file

from lever.data import XCDataset
from lever.train.backbone import AmpContext, BuildContext
from lever.train.distributed import init_distributed, shutdown_distributed, sum_gradients
from lever.train.params import LeverParams
from lever.train.rows import BatchBuilder, GlobalBatchSampler, TrainRows
from lever_adapters.renee.train import ReneeBackbone, full_state_dict

GLOBAL_BATCH = 24


def main(data_dir: str, out: str, steps: int) -> None:
    torch.manual_seed(0)
    env = init_distributed("cpu")
    ds = XCDataset.load(data_dir)
    aug = ds.with_label_rows()
    rows = TrainRows(Y=aug.Y, num_docs=aug.num_docs)
    backbone = ReneeBackbone(
        {
            "encoder": {"kind": "tfidf", "bag_dim": 16, "dropout": 0.0, "tfidf_min_df": 1},
            "lr_clf": 0.05,
            "lr_enc": 1e-2,
            "clf_micro_batch": 5,  # also exercises split accumulation across the gathered batch
            "loss_every": 1,
            "label_shards": True,
        }
    )
    ctx = BuildContext(ds, rows, None, torch.device("cpu"), env, cache_dir=data_dir)
    module = backbone.build(ctx)
    opts = []
    for g in backbone.param_groups(module):
        if g.optimizer == "sgd":
            opts.append(
                torch.optim.SGD(g.params, lr=g.lr, momentum=g.momentum, weight_decay=g.weight_decay)
            )
        else:
            opts.append(
                torch.optim.AdamW(g.params, lr=g.lr, weight_decay=g.weight_decay, eps=g.eps)
            )
    sampler = GlobalBatchSampler(
        rows.num_rows, GLOBAL_BATCH // env.world_size, env.world_size, env.rank, seed=3
    )
    build = BatchBuilder(rows, backbone.batch_inputs, LeverParams(lam=0.5).validate().loss_params("sum"))
    amp = AmpContext(torch.device("cpu"), enabled=False)
    losses = []
    module.train()
    for step, micro, global_rows in sampler.epoch(0):
        if step >= steps:
            break
        batch = build(micro[0], global_rows)
        loss = backbone.forward_backward(module, batch, amp)
        sum_gradients(module.head.parameters(), env)  # the shared loop's data-parallel reduction
        for opt in opts:
            opt.step()
            opt.zero_grad(set_to_none=True)
        t = torch.tensor([loss], dtype=torch.float64)
        if env.enabled:
            torch.distributed.all_reduce(t)
        losses.append(float(t))
    state = full_state_dict(module, backbone)
    if env.is_main:
        state = {k: v.contiguous() for k, v in state.items()}
        state["losses"] = torch.tensor(losses, dtype=torch.float64)
        save_file(state, out)
    env.barrier()  # every rank done (rank 0 has written OUT) before the group goes away
    shutdown_distributed(env)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 4)
    # gloo's threads sometimes abort the interpreter at exit ("terminate called without an active
    # exception") after all work is done and the group is shut down; the test judges the written
    # file, so leave without running finalizers.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
