"""What nc's trainers share: the learning-rate schedule and the run log."""
from __future__ import annotations

import argparse
import dataclasses
import json
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


def json_object(text: str) -> dict:
    """An argparse type for --config: a JSON object."""
    try:
        value = json.loads(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not JSON ({e}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"not a JSON object of config keys: {text!r}")
    return value


def build_config(config_class, values: dict, source: str):
    """config_class(**values), or a one-line refusal that names where the values came from (--config,
    --init's weights, a checkpoint): an unknown key is usually weights of another kind of network."""
    keys = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(set(values) - keys)
    if unknown:
        raise SystemExit(f"{source} has {', '.join(map(repr, unknown))}, which the network's config lacks "
                         f"(its keys: {', '.join(sorted(keys))})")
    defaults = {f.name: f.default for f in dataclasses.fields(config_class) if f.default is not dataclasses.MISSING}
    wrong = [k for k, v in values.items() if k in defaults and not _same_kind(defaults[k], v)]
    if wrong:
        raise SystemExit(f"{source} gives {', '.join(f'{k}={values[k]!r}' for k in wrong)}: not the kind of value "
                         f"the config takes (its defaults: {', '.join(f'{k}={defaults[k]!r}' for k in wrong)})")
    try:
        return config_class(**values)
    except (TypeError, ValueError) as e:
        raise SystemExit(f"{source} does not make a valid config: {e}") from None


def _same_kind(default, value) -> bool:
    """Whether a config value is the kind its default is: an int for an int, a number for a float, text
    for text, a list for a tuple or list (of the same kind); anything for a default of None."""
    if default is None:
        return True
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    if isinstance(default, (tuple, list)):
        return isinstance(value, (tuple, list)) and all(_same_kind(default[0], v) for v in value) if default \
            else isinstance(value, (tuple, list))
    return isinstance(value, type(default))


def trainer_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """A trainer's argument parser, with the `nc` command's one-line errors."""
    from nc.cli.main import OneLineParser

    return OneLineParser(prog=prog, description=description)
