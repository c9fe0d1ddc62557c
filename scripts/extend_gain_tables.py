"""Add extrapolated quality levels below a weights file's trained range, without retraining.

    .venv/bin/python scripts/extend_gain_tables.py IN.safetensors OUT.safetensors [--levels 1]

For weights exported before the gain tables could hold such levels (nc.models.hyperprior.extend_below):
every other tensor, the metadata and the trained rows of the tables are copied bit for bit, so
files coded at the trained qualities are the same bytes (only the weights' hash differs).
The shipped image/hvae weights were made this way from the GPU run's export (their model card).
"""
from __future__ import annotations

import argparse
import json

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from nc.models.hyperprior import extend_below


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("weights_in")
    ap.add_argument("weights_out")
    ap.add_argument("--levels", type=int, default=1)
    args = ap.parse_args()
    tensors = load_file(args.weights_in)
    with safe_open(args.weights_in, "pt") as f:
        metadata = f.metadata() or {}
    if int(tensors.get("gain.levels_below", torch.zeros(1)).reshape(-1)[0]) != 0:
        raise SystemExit(f"{args.weights_in}: its gain tables already extend below the trained range")
    trained = tensors["gain.log"]
    tables = extend_below(trained, args.levels)
    rows = trained.shape[0]
    if not (torch.equal(tables["gain.log"][-rows:], trained)
            and torch.equal(tables["gain.value"][-rows:], tensors["gain.value"])):
        raise SystemExit(f"{args.weights_in}: its gain.value does not follow its gain.log; re-export the tables")
    tensors.update(tables)
    save_file(tensors, args.weights_out, metadata=metadata)
    print(f"{args.weights_out}: {tables['gain.log'].shape[0]} gain rows ({args.levels} level(s) below the trained "
          f"{rows}); metadata {json.loads(metadata.get('nc', '{}')).get('codec', '?')}")


if __name__ == "__main__":
    main()
