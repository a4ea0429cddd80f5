"""Helpers of the teacher resume tests: a run interrupted at a chosen training step, then resumed,
compared with an uninterrupted one."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.torch import load_file


class _Crash(RuntimeError):
    pass


def crash_then_resume(monkeypatch, teacher_class, crash_at: int, run) -> None:
    """``run(resume)`` once with the ``crash_at``-th training step raising, then resumed."""
    calls = {"n": 0}
    original = teacher_class.forward_backward

    def forward_backward(self, module, items, amp):
        calls["n"] += 1
        if calls["n"] == crash_at:
            raise _Crash
        return original(self, module, items, amp)

    monkeypatch.setattr(teacher_class, "forward_backward", forward_backward)
    with pytest.raises(_Crash):
        run(False)
    monkeypatch.setattr(teacher_class, "forward_backward", original)
    run(True)


def assert_same_runs(a, b, weights: str) -> None:
    """Equal final weights, exported embeddings and logged epoch losses."""
    wa, wb = load_file(str(a / weights)), load_file(str(b / weights))
    assert wa.keys() == wb.keys()
    for key in wa:
        assert np.array_equal(wa[key].numpy(), wb[key].numpy()), key
    for split in ("lbl", "tst", "trn"):
        np.testing.assert_array_equal(
            np.load(a / "embeddings" / f"{split}.npy"), np.load(b / "embeddings" / f"{split}.npy")
        )
    logs = [[json.loads(x) for x in (r / "metrics.jsonl").read_text().splitlines()] for r in (a, b)]
    assert [r["epoch"] for r in logs[1]] == [r["epoch"] for r in logs[0]]  # nothing logged twice
    assert [r.get("loss") for r in logs[0]] == [r.get("loss") for r in logs[1]]
