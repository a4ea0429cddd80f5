"""The generic adapter for lever: any ``torch.nn.Module`` with dense or shortlisted logits
(``lever.wrap``), and ``lever train --backbone generic``, a linear head on frozen embeddings.

The worked example a third-party adapter copies; see docs/adapters.md."""
