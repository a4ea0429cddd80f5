"""Learning-rate schedules, each a pure function of the optimizer step (a resumed run needs no
scheduler state beyond the step counter).

- ``cosine`` / ``linear`` / ``constant``: linear warm-up, then cosine or linear decay to 0 (Renée's
  ``get_cosine_schedule_with_warmup`` shape) or none.
- ``one_cycle``: CascadeXML's three-phase one-cycle (its ``ThreePhaseOneCycleLR`` with
  ``div_factor=10, final_div_factor=100``): cosine rise from lr/10 to lr over the warm-up (0 warm-up
  steps: one epoch, upstream's ``--warmup 1``), flat, then cosine decay to lr/1000 over the last
  three epochs; Adam's β1 moves the other way, 0.95 → 0.85 during the rise and back to 0.95 during
  the decay (:func:`adam_beta1`).
"""

from __future__ import annotations

import math

SCHEDULES = ("cosine", "linear", "constant", "one_cycle")
ONE_CYCLE_START = 0.1  # lr / div_factor
ONE_CYCLE_END = 1e-3  # lr / (div_factor · final_div_factor)
ONE_CYCLE_BETA1 = (0.95, 0.85)  # β1 at the ends of the cycle, at the peak
ONE_CYCLE_DECAY_EPOCHS = 3


def _cos_between(start: float, end: float, progress: float) -> float:
    """``start`` at progress 0 to ``end`` at 1 along half a cosine."""
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, max(0.0, progress))))


def _one_cycle_phase(step: int, total: int, warmup: int, steps_per_epoch: int) -> tuple[int, float]:
    """(phase 0 rise | 1 flat | 2 decay, progress within the phase) of ``step``."""
    warmup = min(warmup or steps_per_epoch, total)
    decay = min(ONE_CYCLE_DECAY_EPOCHS * steps_per_epoch, total - warmup)
    if step < warmup:
        return 0, step / warmup
    if step < total - decay:
        return 1, 0.0
    return 2, (step - (total - decay)) / max(1, decay)


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str, steps_per_epoch: int = 1) -> float:
    """Multiplier of the base learning rate for optimizer step ``step`` (0-based)."""
    if schedule == "one_cycle":
        phase, progress = _one_cycle_phase(step, total_steps, warmup_steps, steps_per_epoch)
        return (_cos_between(ONE_CYCLE_START, 1.0, progress), 1.0,
                _cos_between(1.0, ONE_CYCLE_END, progress))[phase]
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
    raise ValueError(f"schedule {schedule!r}: expected one of {SCHEDULES}")


def adam_beta1(step: int, total_steps: int, warmup_steps: int, schedule: str, steps_per_epoch: int = 1
               ) -> float | None:
    """Adam's β1 for ``step`` under ``schedule``; None: the schedule leaves the optimizer's own."""
    if schedule != "one_cycle":
        return None
    high, low = ONE_CYCLE_BETA1
    phase, progress = _one_cycle_phase(step, total_steps, warmup_steps, steps_per_epoch)
    return (_cos_between(high, low, progress), low, _cos_between(low, high, progress))[phase]
