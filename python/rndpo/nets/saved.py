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

:func:`load_model` allocates nothing a hand-edited description asks for before checking it: the sizes it
declares against the caps of :mod:`rndpo.data.input_limits` (``image_size ** 2`` within
``RNDPO_MAX_PIXELS``, ``patch_size`` and ``inference_size`` within ``RNDPO_MAX_VOXELS``, every integer of
the architecture within ``RNDPO_MAX_CHANNELS``), then the network it describes, built on PyTorch's
``meta`` device (no memory), against the tensor shapes of the weights file.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rndpo import __version__
from rndpo.data.input_limits import check_size, max_channels
from rndpo.nets.registry import architecture_of, network_from_architecture
from rndpo.storage import atomic_write, first_line, load_weights, write_json

__all__ = ["FORMAT", "SCALINGS", "SavedModel", "load_model", "save_model"]

FORMAT = "rndpo-model/1"

#: ``scaling["kind"]`` values, how image files were scaled into model inputs: ``unit`` (uint8 / 255,
#: uint16 / 65535, other integers by their value range, float images used as they are: the npz and folder
#: loaders, see :func:`rndpo.data.input_limits.unit_divisor`),
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


_MAX_LIST = 64  # entries of one list in an architecture description (levels, strides, ...)


def _read_description(js: Path) -> dict[str, Any]:
    try:
        info = json.loads(js.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise ValueError(f"{js}: not an rndpo model description: not JSON ({first_line(err)})") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise ValueError(f"{js}: not an rndpo model description (format {FORMAT!r} expected)")
    return info


def _size(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value) or value < 1:
        raise ValueError(f"{where} must be a positive integer, got {value!r}")
    return int(value)


def _check_architecture(value: object, where: str, cap: int) -> None:
    """Every integer in the description within ``cap``, every list within _MAX_LIST entries."""
    if isinstance(value, bool):
        return
    if isinstance(value, int) and value > cap:
        raise ValueError(
            f"{where} = {value} is more than the cap of {cap} for a saved network's sizes; set the"
            " environment variable RNDPO_MAX_CHANNELS higher to load it"
        )
    if isinstance(value, list) and len(value) > _MAX_LIST:
        raise ValueError(f"{where} has {len(value)} entries, more than {_MAX_LIST}")
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        _check_architecture(item, f"{where}.{key}" if isinstance(key, str) else f"{where}[{key}]", cap)


def _check_declared_sizes(info: dict[str, Any], js: Path) -> None:
    """The sizes a description declares, against the caps, before anything is built from them."""
    cap = max_channels()
    channels = _size(info.get("in_channels"), f"{js}: in_channels")
    if channels > cap:
        _check_architecture(channels, f"{js}: in_channels", cap)
    if info.get("image_size") is not None:
        side = _size(info["image_size"], f"{js}: image_size")
        check_size((side, side), f"{js}: image_size {side} (inputs resized to {side} x {side})", "pixels")
    for key in ("patch_size", "inference_size"):
        value = info.get(key)
        if value is not None:
            if not isinstance(value, list) or not 1 <= len(value) <= 3:
                raise ValueError(f"{js}: {key} must be a list of 1 to 3 positive integers, got {value!r}")
            shape = tuple(_size(v, f"{js}: {key}[{i}]") for i, v in enumerate(value))
            check_size(shape, f"{js}: {key}")
    spacing = info.get("spacing")
    if spacing is not None and not (
        isinstance(spacing, list)
        and 1 <= len(spacing) <= 3
        and all(
            isinstance(v, int | float) and not isinstance(v, bool) and 0 < v < float("inf") for v in spacing
        )
    ):
        raise ValueError(f"{js}: spacing must be a list of 1 to 3 positive numbers (mm), got {spacing!r}")
    _check_architecture(info.get("architecture"), f"{js}: architecture", cap)


def _read_weights(pt: Path) -> dict[str, torch.Tensor]:
    """The state dict of ``pt`` (weights_only); a corrupt or truncated file is a one-line ValueError."""
    try:
        with warnings.catch_warnings():  # a corrupt file makes torch warn about what it then refuses
            warnings.simplefilter("ignore")
            state = load_weights(pt)
    except Exception as err:  # a flipped byte trips the unpickler in many ways (KeyError, TypeError, ...)
        text = first_line(err)
        if not (isinstance(err, ValueError) and str(pt) in text):  # load_weights' own messages name it
            text = f"{pt}: not a readable weights file ({type(err).__name__}: {text})"
        raise ValueError(text) from None
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ValueError(f"{pt}: not a weights file: expected named tensors, got a {type(state).__name__}")
    return dict(state)


def _check_fits(architecture: Any, state: Mapping[str, torch.Tensor], js: Path, pt: Path) -> None:
    """The network ``architecture`` describes, built on the meta device (no memory), has exactly the
    tensors of ``state``, shape for shape; else a ValueError naming the first difference."""
    with torch.device("meta"):
        meta = network_from_architecture(architecture, f"{js}: architecture")
    expected = {k: tuple(v.shape) for k, v in meta.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    problems = [
        f"{k}: the network has shape {shape}, the file {found[k]}"
        for k, shape in expected.items()
        if k in found and found[k] != shape
    ]
    missing, extra = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    if missing:
        problems.insert(0, f"{len(missing)} tensors missing ({', '.join(missing[:3])}, ...)")
    if extra:
        problems.insert(0, f"{len(extra)} unexpected tensors ({', '.join(extra[:3])}, ...)")
    if problems:
        raise ValueError(f"{pt}: the weights do not fit the network {js.name} describes: {problems[0]}")


def load_model(path: str | Path, model: nn.Module | None = None) -> SavedModel:
    """Read a saved segmenter (``MODEL.pt`` or ``MODEL.json``): rebuild its network (or load the
    weights into ``model``), with ``torch.load(weights_only=True)``; the network is in eval mode on CPU.

    The network is rebuilt through the registry (:func:`rndpo.nets.registry.network_from_architecture`),
    so every registered network loads (MONAI's need MONAI installed: ImportError otherwise). Before
    anything is built, the description's sizes are checked against the caps and the network it describes
    against the weights' tensor shapes (see the module docstring): a hand-edited or corrupt pair is a
    one-line ValueError naming the file."""
    path = Path(path)
    pt, js = path.with_suffix(".pt"), path.with_suffix(".json")
    for p in (pt, js):
        if not p.is_file():
            raise FileNotFoundError(f"path: {p} not found (a saved model is MODEL.pt beside MODEL.json)")
    info = _read_description(js)
    _check_declared_sizes(info, js)
    state = _read_weights(pt)  # torch.load(weights_only=True): tensors only, nothing runs
    if model is None:
        _check_fits(info.get("architecture", {}), state, js, pt)
        network = network_from_architecture(info.get("architecture", {}), f"{js}: architecture")
    else:
        network = model
    try:
        network.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"{pt}: the weights do not fit the network: {first_line(err)}") from None
    network.eval()
    return SavedModel(network, info)
