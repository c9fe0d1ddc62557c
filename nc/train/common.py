"""What nc's trainers share: the learning-rate schedule and the run log."""
from __future__ import annotations

import math
import time
from pathlib import Path


def learning_rate(step: int, progress: float, peak: float, warmup: int = 200) -> float:
    """Linear warm-up over `warmup` steps, then cosine decay to a tenth of the peak as `progress`
    goes from 0 to 1 (by steps or by time, whichever is further: a time-boxed run still anneals)."""
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def log_line(out: Path, line: str) -> None:
    """Print `line` with a time stamp and append it to out/train.log."""
    stamp = time.strftime("%H:%M:%S")
    print(f"[{stamp}] {line}", flush=True)
    with open(out / "train.log", "a") as f:
        f.write(f"[{stamp}] {line}\n")
