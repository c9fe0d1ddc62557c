"""Weights and training checkpoints as safetensors files: tensors plus JSON metadata, never pickle."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from nc.errors import PluginError


def sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_weights(path: str | Path, model: torch.nn.Module, extra: dict[str, torch.Tensor], meta: dict) -> None:
    """Shipped weights: float parameters stored as fp16 (half the size; loaded back as fp32)."""
    tensors = {f"model.{k}": (v.half() if v.is_floating_point() else v).contiguous().cpu()
               for k, v in model.state_dict().items()}
    tensors.update({k: v.contiguous().cpu() for k, v in extra.items()})
    save_file(tensors, str(path), metadata={"nc": json.dumps(meta, sort_keys=True)})


def load_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict]:
    """(model state dict in fp32, other tensors, metadata); a clear error for a bad file."""
    try:
        tensors = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = json.loads((f.metadata() or {}).get("nc", "{}"))
    except (OSError, SafetensorError, ValueError) as e:
        raise PluginError(f"cannot load weights {path}: {e}") from None
    model = {k[6:]: (v.float() if v.is_floating_point() else v) for k, v in tensors.items() if k.startswith("model.")}
    extra = {k: v for k, v in tensors.items() if not k.startswith("model.")}
    return model, extra, meta


def save_checkpoint(path: str | Path, modules: dict[str, torch.nn.Module],
                    optimizers: dict[str, torch.optim.Optimizer], meta: dict) -> None:
    """Full-precision modules and Adam states under their names, written atomically (a crash never
    leaves half a checkpoint). `modules={"model": codec, "disc": discriminator}`, `optimizers={"opt": ...}`."""
    tensors = {f"{name}.{k}": v.detach().contiguous().cpu()
               for name, module in modules.items() for k, v in module.state_dict().items()}
    groups = {}
    for name, optimizer in optimizers.items():
        state = optimizer.state_dict()
        for i, s in state["state"].items():
            for key, value in s.items():
                tensors[f"{name}.{i}.{key}"] = (value if torch.is_tensor(value) else torch.tensor(value)).contiguous().cpu()
        groups[name] = [{k: v for k, v in g.items() if k != "params"} for g in state["param_groups"]]
    meta = dict(meta, param_groups=groups)
    tmp = Path(str(path) + ".tmp")
    save_file(tensors, str(tmp), metadata={"nc": json.dumps(meta)})
    tmp.replace(path)


def checkpoint_meta(path: str | Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return json.loads(f.metadata()["nc"])


def load_checkpoint(path: str | Path, modules: dict[str, torch.nn.Module],
                    optimizers: dict[str, torch.optim.Optimizer]) -> dict:
    """Restore what `save_checkpoint` wrote; a module or optimizer the checkpoint lacks (a discriminator
    added when fine-tuning, say) keeps its fresh state. Returns the metadata."""
    tensors = load_file(str(path))
    meta = checkpoint_meta(path)
    groups = meta.pop("param_groups")
    if isinstance(groups, list):  # checkpoints written before the discriminator existed
        groups = {"opt": groups}
    for name, module in modules.items():
        state = {k[len(name) + 1:]: v for k, v in tensors.items() if k.startswith(name + ".")}
        if state:
            module.load_state_dict(state)
    for name, optimizer in optimizers.items():
        if name not in groups:
            continue
        state: dict = {"state": {}, "param_groups": []}
        for key, value in tensors.items():
            if key.startswith(name + "."):
                _, i, field = key.split(".", 2)
                state["state"].setdefault(int(i), {})[field] = value
        fresh = optimizer.state_dict()["param_groups"]
        state["param_groups"] = [dict(saved, params=g["params"]) for saved, g in zip(groups[name], fresh)]
        optimizer.load_state_dict(state)
    return meta
