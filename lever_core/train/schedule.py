"""Learning-rate schedules: linear warm-up, then cosine or linear decay to 0 (Renée's
``get_cosine_schedule_with_warmup`` shape). A pure function of the step, so a resumed run needs no
scheduler state beyond the step counter."""

from __future__ import annotations

import math


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str) -> float:
    """Multiplier of the base learning rate for optimizer step ``step`` (0-based)."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "linear":
        return 1.0 - progress
    raise ValueError(f"schedule {schedule!r}: expected 'cosine', 'linear' or 'constant'")
