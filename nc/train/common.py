"""What nc's trainers share: the learning-rate schedule and the run log."""
from __future__ import annotations

import argparse
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



def positive(kind, zero_ok: bool = False):
    """An argparse type: a finite number of `kind` above 0 (a batch, a step count, a learning rate), or
    with zero_ok 0 and above (0 meaning no limit or the default)."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a{'n integer' if kind is int else ' number'}: {text!r}") from None
        if not (math.isfinite(value) and (value >= 0 if zero_ok else value > 0)):
            raise argparse.ArgumentTypeError(f"must be {'0 or more' if zero_ok else 'above 0'}, not {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


def trainer_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """A trainer's argument parser, with the `nc` command's one-line errors."""
    from nc.cli.main import OneLineParser

    return OneLineParser(prog=prog, description=description)
