"""Resumable training checkpoints, written without pickle.

A checkpoint folder holds ``tensors.safetensors`` (model weights, optimizer
moments, torch RNG state) and ``state.json`` (step, best score, optimizer
hyper-parameters, scheduler counters, Python and NumPy RNG states). It is
written to a temporary folder and renamed into place, so a kill at any moment
leaves either the previous checkpoint or the new one, never half of one.
"""

import json
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

TENSORS = "tensors.safetensors"
STATE = "state.json"


def save_checkpoint(folder: Path, model, optimizer, scheduler, trainer_state: dict) -> None:
    tensors = {f"model.{k}": v.detach().contiguous() for k, v in model.state_dict().items()}
    optim = optimizer.state_dict()
    for index, slots in optim["state"].items():
        for key, value in slots.items():
            tensors[f"optim.{index}.{key}"] = torch.as_tensor(value).contiguous()
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():  # dropout on a GPU draws from its generator (every process's runs alike)
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    np_state = np.random.get_state()
    state = {
        "trainer": trainer_state,
        "optimizer_groups": optim["param_groups"],
        "scheduler": scheduler.state_dict(),
        "rng_python": random.getstate(),
        "rng_numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
    }
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(tensors, tmp / TENSORS)
    (tmp / STATE).write_text(json.dumps(state))
    old = folder.with_name(folder.name + ".old")
    if folder.exists():
        shutil.rmtree(old, ignore_errors=True)  # stale: `folder` is complete and newer
        folder.replace(old)
    tmp.replace(folder)
    shutil.rmtree(old, ignore_errors=True)


def find_checkpoint(folder: Path) -> Path | None:
    """The last complete checkpoint, also when a kill fell between the two renames."""
    for candidate in (folder, folder.with_name(folder.name + ".old")):
        if (candidate / STATE).is_file() and (candidate / TENSORS).is_file():
            return candidate
    return None


def load_checkpoint(folder: Path, model, optimizer, scheduler) -> dict:
    """Restore everything ``save_checkpoint`` wrote; returns the trainer state."""
    tensors = load_file(folder / TENSORS)
    state = json.loads((folder / STATE).read_text())
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}, strict=True)
    slots: dict[int, dict] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, index, key = name.split(".", 2)
            slots.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": slots, "param_groups": state["optimizer_groups"]})
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and torch.cuda.is_available():  # each process's own GPU
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    version, internal, gauss = state["rng_python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, *rest = state["rng_numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), *rest))
    return state["trainer"]
