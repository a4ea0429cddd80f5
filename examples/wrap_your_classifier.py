"""Plain PyTorch one-vs-all on frozen MiniLM embeddings of WordNet: BCE, then `lever.wrap`."""
import sys

import numpy as np
import torch
import torch.nn.functional as F

import lever
from lever.metrics import evaluate, format_table, inverse_propensity
from lever.train.embeddings import frozen_embeddings

argv = sys.argv[1:] + ["runs/wordnet", "runs/soft_wordnet.npz"][len(sys.argv) - 1 :]  # DATA SOFT
ds, soft_path = lever.XCDataset.load(argv[0]), argv[1]  # zero-shot: runs/soft_wordnet_zeroshot.npz
soft = lever.SoftLabels.load(soft_path, dataset=ds)  # (N + L) × L calibrated teacher scores
rows = ds.with_label_rows()  # the same N + L rows: documents, then each label's text as a row
emb = frozen_embeddings(ds, "runs/cache", None)  # MiniLM, by lever.encoders.cached_embeddings
X, X_tst = (torch.tensor(np.concatenate([emb[s] for s in sp])) for sp in (("trn", "lbl"), ("tst",)))
inv_prop = inverse_propensity(ds.trn_Y, ds.meta.propensity_a, ds.meta.propensity_b)


def train_and_evaluate(use_lever: bool, epochs: int = 20, batch: int = 256) -> dict:
    torch.manual_seed(0)
    clf = torch.nn.Linear(X.shape[1], ds.num_labels)
    model = lever.wrap(clf, soft, lam=0.5, mode="mix") if use_lever else clf
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    for _ in range(epochs):
        for ids in torch.randperm(len(X)).split(batch):
            y = rows.Y[ids.numpy()]
            loss = (model.loss(X[ids], ids, y) if use_lever else  # the one changed line
                    F.binary_cross_entropy_with_logits(clf(X[ids]), torch.tensor(y.toarray())))
            loss.backward(), opt.step(), opt.zero_grad()
    with torch.no_grad():  # prediction is the bare classifier's, wrapped or not
        top = [torch.sigmoid(clf(x)).topk(100) for x in X_tst.split(2048)]
    pred = (torch.cat([t.indices for t in top]).numpy(), torch.cat([t.values for t in top]).numpy())
    return evaluate(ds.tst_Y, pred, inv_prop, k=5, filter=ds.tst_filter)


for name, use_lever in (("plain BCE", False), (f"lever.wrap with {soft_path}", True)):
    print(f"\n{ds.name}, linear OvA, {name}:\n{format_table(train_and_evaluate(use_lever))}")
