"""Saved segmenters: a plain state dict (``MODEL.pt``) beside a JSON description (``MODEL.json``).

The ``.pt`` file holds only tensors, so ``torch.load(path, weights_only=True)`` reads it; no pickled
object is ever needed. The JSON says how to rebuild the network and how its inputs were prepared:

- ``format``: ``"rndpo-model/1"``; ``version``: the rndpo version that wrote it;
- ``architecture``: ``{"name", "spatial_dims", "in_channels", "out_channels", "kwargs"}``, a network of
  the registry (:data:`rndpo.nets.registry.NETWORKS`) and its keyword arguments, rebuilt with
  :func:`rndpo.nets.registry.build_network` (files of rndpo 0.x before it hold ``{"name":
  "rndpo.UNet" | "monai.BasicUNet", "config": {...}}``: they load too); any other name (``kwargs``
  None) needs the network passed to :func:`load_model`;
- ``in_channels`` and ``image_size``: inputs are resized to (image_size, image_size) (None: as given);
- ``scaling``: how files were turned into model inputs (see :data:`SCALINGS`; older files call it
  ``normalisation``);
- ``threshold``: foreground where the sigmoid probability is > threshold (binary, one output channel);
- label maps (written for models with C >= 2 output channels, softmax, label = argmax): ``num_classes``
  C, ``class_names`` (background first), ``label_values`` (the value of each class in the dataset's own
  files, used when writing label maps); volumes: ``spacing`` (the training spacing in mm, array-axis
  order, the median over the training volumes), ``patch_size`` (the training patch size) and
  ``inference_size`` (the sliding-window size; absent: ``patch_size``; neither: whole inputs);
- free fields written by the experiment: ``method``, ``judge``, ``miner``, ``seed``, ``selected_step``,
  ``val_dice``, ``test_dice``, ``dataset``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rndpo import __version__
from rndpo.nets.registry import architecture_of, network_from_architecture
from rndpo.storage import atomic_write, load_weights, write_json

__all__ = ["FORMAT", "SCALINGS", "SavedModel", "load_model", "save_model"]

FORMAT = "rndpo-model/1"

#: ``scaling["kind"]`` values, how image files were scaled into model inputs: ``unit`` (integer images
#: divided by their dtype's maximum, float images used as they are: the npz and folder loaders),
#: ``volume_percentile`` (NIfTI: each volume clipped to ``window`` or to its 0.5-99.5 percentiles and
#: rescaled to [0, 1], sliced along ``axis``), ``none`` (arrays used as given: the caller's scaling).
SCALINGS: tuple[str, ...] = ("unit", "volume_percentile", "none")


@dataclass(frozen=True)
class SavedModel:
    """A loaded segmenter: ``network`` (eval mode, CPU) and ``info`` (the JSON description)."""

    network: nn.Module
    info: dict[str, Any]

    @property
    def image_size(self) -> int | None:
        size = self.info.get("image_size")
        return None if size is None else int(size)

    @property
    def in_channels(self) -> int:
        return int(self.info["in_channels"])

    @property
    def threshold(self) -> float:
        return float(self.info.get("threshold", 0.5))

    @property
    def spatial_dims(self) -> int:
        """2 or 3, from the architecture (2 for files that do not say)."""
        return int(self.info.get("architecture", {}).get("spatial_dims") or 2)

    @property
    def num_classes(self) -> int:
        """C including the background: 2 for binary models (one sigmoid output)."""
        return int(self.info.get("num_classes", 2))

    @property
    def label_values(self) -> tuple[int, ...]:
        """The file value of each class (default 0..C-1)."""
        return tuple(int(v) for v in self.info.get("label_values", range(self.num_classes)))

    @property
    def class_names(self) -> tuple[str, ...]:
        """One name per class, background first."""
        names = self.info.get("class_names")
        if names:
            return tuple(str(n) for n in names)
        if self.num_classes == 2:
            return ("background", "foreground")
        return ("background", *(f"class_{i}" for i in range(1, self.num_classes)))

    @property
    def spacing(self) -> tuple[float, ...] | None:
        """The training spacing in mm (array-axis order), or None when not recorded."""
        sp = self.info.get("spacing")
        return None if sp is None else tuple(float(v) for v in sp)

    @property
    def patch_size(self) -> tuple[int, ...] | None:
        """The training patch size, or None (whole images)."""
        ps = self.info.get("patch_size")
        return None if ps is None else tuple(int(v) for v in ps)

    @property
    def inference_size(self) -> tuple[int, ...] | None:
        """The sliding-window size used for inference (``inference_size``, else ``patch_size``), or None
        (whole inputs)."""
        size = self.info.get("inference_size")
        return self.patch_size if size is None else tuple(int(v) for v in size)

    @property
    def scaling(self) -> dict[str, Any]:
        """How image files are scaled into model inputs: ``{"kind": one of SCALINGS, ...}``."""
        return dict(self.info.get("scaling", self.info.get("normalisation", {"kind": "none"})))


def _architecture(model: nn.Module) -> dict[str, Any]:
    found = architecture_of(model)
    if found is not None:
        return found
    return {"name": f"{type(model).__module__}.{type(model).__qualname__}", "kwargs": None}


def save_model(
    path: str | Path,
    model: nn.Module,
    *,
    in_channels: int,
    image_size: int | None,
    scaling: Mapping[str, Any] | None = None,
    threshold: float = 0.5,
    architecture: Mapping[str, Any] | None = None,
    state_dict: Mapping[str, torch.Tensor] | None = None,
    **info: Any,
) -> tuple[Path, Path]:
    """Write ``path`` (.pt, a plain state dict) and its ``.json`` description; returns both paths.

    scaling: how image files were scaled into the inputs (``{"kind": one of SCALINGS, ...}``; default
    ``none``); state_dict: the weights to save (default: ``model``'s own); architecture: how to rebuild
    the network (default: :func:`rndpo.nets.registry.architecture_of`, for every network built by
    ``build_network`` and every ``UNet``); info: further JSON-ready fields to record.
    """
    path = Path(path)
    if path.suffix != ".pt":
        raise ValueError(f"path must end in .pt, got {path}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    if "normalisation" in info:
        raise TypeError("save_model: normalisation= is now called scaling= (how images were scaled)")
    scale = dict(scaling) if scaling is not None else {"kind": "none"}
    if scale.get("kind") not in SCALINGS:
        raise ValueError(f"scaling['kind'] must be one of {list(SCALINGS)}, got {scale.get('kind')!r}")
    arch = dict(architecture) if architecture is not None else _architecture(model)
    weights = state_dict if state_dict is not None else model.state_dict()
    tensors = {k: v.detach().cpu().clone() for k, v in weights.items()}
    atomic_write(path, lambda tmp: torch.save(tensors, tmp))
    meta = {
        "format": FORMAT,
        "version": __version__,
        "architecture": arch,
        "in_channels": int(in_channels),
        "image_size": None if image_size is None else int(image_size),
        "scaling": scale,
        "threshold": float(threshold),
        **info,
    }
    json_path = path.with_suffix(".json")
    write_json(json_path, meta)
    return path, json_path


def load_model(path: str | Path, model: nn.Module | None = None) -> SavedModel:
    """Read a saved segmenter (``MODEL.pt`` or ``MODEL.json``): rebuild its network (or load the
    weights into ``model``), with ``torch.load(weights_only=True)``; the network is in eval mode on CPU.

    The network is rebuilt through the registry (:func:`rndpo.nets.registry.network_from_architecture`),
    so every registered network loads (MONAI's need MONAI installed: ImportError otherwise)."""
    path = Path(path)
    pt, js = path.with_suffix(".pt"), path.with_suffix(".json")
    for p in (pt, js):
        if not p.is_file():
            raise FileNotFoundError(f"path: {p} not found (a saved model is MODEL.pt beside MODEL.json)")
    info = json.loads(js.read_text())
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise ValueError(f"{js}: not an rndpo model description (format {FORMAT!r} expected)")
    if model is None:
        network = network_from_architecture(info.get("architecture", {}), f"{js}: architecture")
    else:
        network = model
    state = load_weights(pt)  # torch.load(weights_only=True): tensors only, nothing runs
    try:
        network.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"{pt}: the weights do not fit the network: {err}") from None
    network.eval()
    return SavedModel(network, info)
