"""Command-line interface: ``rndpo demo``, ``rndpo run CONFIG.toml``, ``rndpo predict`` and ``rndpo mine``.

``main(argv)`` returns an exit code and never raises for user errors: a bad config or device, a missing,
corrupt or truncated file, an occupied output folder, an output that would replace an input or an existing
file (``predict`` and ``mine`` without ``--overwrite``), a full or read-only disk: one clear line naming the
file or argument on stderr, exit 2, nothing half-written. Anything else keeps its traceback.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import pickle
import sys
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from rndpo import __version__

__all__ = ["DEMO_CONFIG", "main"]

# The demo: the built-in synthetic data at 32 x 32 (22 labeled, 198 pool, 100 validation, 80 test images),
# a reliable judge (a noisy oracle at Spearman 0.9 with the true Dice) with top_vs_bottom mining, three
# objectives, the headroom ladder (labeled-only control, perfect labels, the oracle's best of K), two
# seeds. The base model trains to convergence (the package default: patience, then a cooldown), so the
# control measures what more supervised training alone buys: nothing (it overfits the 22 images). On
# 2 idle cores (2 threads) it takes 2 min 18 s; gains over the base are small next to the base's spread
# over seeds and thread counts, so read them against the control (docs/results.md, "The demo").
DEMO_CONFIG: dict[str, Any] = {
    "data": {
        "kind": "synthetic",
        "n_images": 400,
        "image_size": 32,
        "label_budget": 0.1,
        "val_fraction": 0.25,
    },
    "finetune": {"steps": 100, "warmup_steps": 10, "eval_every": 20},
    "judges": {"names": ["noisy_oracle"], "reliabilities": [0.9]},
    "mining": {"strategies": ["top_vs_bottom"]},
    "methods": ["sft_top", "dpo", "rndpo"],
    "seeds": [0, 1],
}


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` overrides (values in TOML syntax; bare words are strings)."""
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"--set expects section.key=value, got {item!r}")
        dotted, value = item.split("=", 1)
        node = raw
        *parents, leaf = dotted.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"--set {dotted}: {part} is not a table")
        node[leaf] = _parse_value(value.strip())
    return raw


def _add_run_flags(p: argparse.ArgumentParser, default_out: str | None) -> None:
    p.add_argument("--out", default=default_out, required=default_out is None, help="output folder")
    p.add_argument("--resume", action="store_true", help="continue an interrupted experiment in --out")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    p.add_argument(
        "--device", default=None, help="torch device, e.g. cpu or cuda (default: cuda if available)"
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set finetune.steps=50 (repeatable)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument(
        "--keep",
        choices=("selected", "all", "none"),
        default="selected",
        help="models written to OUT/models: each run's validation-selected model and the base (selected,"
        " the default), also each run's final weights (all), or none",
    )


def _limit_flags() -> argparse.ArgumentParser:
    """--max-voxels / --max-pixels: raise (or lower) the caps on declared input sizes for this command
    (the environment variables of :mod:`rndpo.data.input_limits`)."""
    flags = argparse.ArgumentParser(add_help=False)
    flags.add_argument(
        "--max-voxels",
        type=int,
        metavar="N",
        help="largest array / volume read, in elements (default 2**31; env RNDPO_MAX_VOXELS)",
    )
    flags.add_argument(
        "--max-pixels",
        type=int,
        metavar="N",
        help="largest 2D image read, in pixels (default 16384**2; env RNDPO_MAX_PIXELS)",
    )
    return flags


def _apply_limits(args: argparse.Namespace) -> None:
    for flag, variable in (("max_voxels", "RNDPO_MAX_VOXELS"), ("max_pixels", "RNDPO_MAX_PIXELS")):
        value = getattr(args, flag, None)
        if value is None:
            continue
        if value < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be a positive number of elements, got {value}")
        os.environ[variable] = str(value)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rndpo", description=__doc__.splitlines()[0])
    limits = _limit_flags()
    parser.add_argument("--version", action="version", version=f"rndpo {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo", parents=[limits], help="the built-in synthetic demo (about 3 minutes on 2 CPU cores)"
    )
    _add_run_flags(demo, "rndpo-demo")
    run = sub.add_parser("run", parents=[limits], help="a full experiment from a TOML config")
    run.add_argument("config", help="TOML config file (see configs/)")
    _add_run_flags(run, "rndpo-out")
    pred = sub.add_parser(
        "predict", parents=[limits], help="segment new images with a saved model (OUT/models/<run>.pt)"
    )
    pred.add_argument("model", help="saved model MODEL.pt (with MODEL.json beside it)")
    pred.add_argument(
        "--images",
        required=True,
        help="an .npz with images, a folder of images, a NIfTI file or a folder of them (3D models: NIfTI"
        " volumes, nnU-Net channel naming <case>_0000.nii.gz or one file per case)",
    )
    pred.add_argument(
        "--out",
        required=True,
        help="output: .npz for an .npz input, else a folder (or a .nii.gz); 3D models write"
        " <case>.nii.gz label maps in the dataset's own label values",
    )
    pred.add_argument(
        "--probs",
        action="store_true",
        help="also write probabilities (3D models: <case>_probs.nii.gz, the C classes on the last axis)",
    )
    pred.add_argument("--overwrite", action="store_true", help="replace output files that exist")
    pred.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    pred.add_argument("--batch-size", type=int, default=64)
    conf = sub.add_parser("config", help="print a run config as commented TOML (every key, its help)")
    conf.add_argument("config", nargs="?", help="TOML config to resolve (with every default filled in)")
    conf.add_argument("--defaults", action="store_true", help="print every key with its default")
    conf.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    mine = sub.add_parser(
        "mine",
        parents=[limits],
        help="mine preference pairs from a saved bank (masks .npy) and scores (.npy)",
    )
    mine.add_argument(
        "masks",
        help="masks .npy, uint8 or bool (N, K, *S); memory-mapped. With --num-classes: label maps of any"
        " integer dtype (uint8 is read in place, other dtypes are converted to uint8 in memory)",
    )
    mine.add_argument("scores", help="scores .npy, float (N, K)")
    mine.add_argument("--strategy", default="top_vs_rest")
    mine.add_argument("--min-margin", type=float, default=0.0)
    mine.add_argument("--min-region", type=int, default=1)
    mine.add_argument("--max-region", type=int, default=None)
    mine.add_argument(
        "--max-region-fraction",
        type=float,
        default=None,
        help="keep pairs with |D| <= this * |chosen| (the chosen mask's non-zero voxels)",
    )
    mine.add_argument("--max-pairs-per-image", type=int, default=None)
    mine.add_argument("--seed", type=int, default=0)
    mine.add_argument(
        "--num-classes",
        type=int,
        default=None,
        metavar="C",
        help="the masks are label maps with labels 0..C-1 (2 <= C <= 255); |D| counts the voxels whose"
        " labels differ (default: binary 0/1 masks)",
    )
    mine.add_argument(
        "--out", required=True, help="output .npz with image, chosen, rejected, region_size, margin"
    )
    mine.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    return parser


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _run(args: argparse.Namespace, raw: dict[str, Any]) -> int:
    from rndpo.config import config_from_dict
    from rndpo.pipeline import ladder_table, output_listing, run_experiment, summary_table

    raw = _apply_overrides(raw, args.overrides)
    raw["device"] = args.device or raw.get("device") or _default_device()
    config = config_from_dict(raw)
    if "LOCAL_RANK" in os.environ:  # started by torchrun
        import torch.distributed as dist

        dist.init_process_group("nccl" if config.device.startswith("cuda") else "gloo")
        if config.device.startswith("cuda"):
            config = config_from_dict({**raw, "device": f"cuda:{os.environ['LOCAL_RANK']}"})
    result = run_experiment(
        config,
        args.out,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=not args.quiet,
        keep=args.keep,
    )
    if not os.environ.get("RANK", "0") == "0":
        return 0
    if result.ladder:
        print("Headroom ladder (test Dice; gain over the base model in brackets):\n")
        print(ladder_table(result.ladder))
    print(summary_table(result.rows))
    print(output_listing(result.out))
    return 0


def _config(args: argparse.Namespace) -> int:
    from rndpo.config import config_from_dict, config_toml, read_toml

    if args.defaults == (args.config is not None):
        raise ValueError("config: pass either --defaults or a CONFIG.toml file")
    raw = {} if args.defaults else read_toml(args.config)
    print(config_toml(config_from_dict(_apply_overrides(raw, args.overrides))), end="")
    return 0


def _check_out(out: str, inputs: Mapping[str, str | Path]) -> None:
    """Refuse an ``--out`` that is, contains or lies inside one of ``inputs`` ({what: path}), compared as
    resolved paths (links followed), or whose nearest existing folder cannot be written; creates nothing."""
    target = Path(out).resolve()
    for what, path in inputs.items():
        source = Path(path).resolve()
        same = target == source or (target.exists() and source.exists() and target.samefile(source))
        relation = (
            "is"
            if same
            else "contains"
            if source.is_relative_to(target)
            else "lies inside"
            if target.is_relative_to(source)
            else None
        )
        if relation:
            raise ValueError(
                f"--out {out} {relation} the input {what} {path}; write the outputs elsewhere"
                " (they would replace or mix with the inputs)"
            )
    from rndpo.storage import nearest_existing

    existing = target if target.is_dir() else nearest_existing(target.parent)
    if existing.is_dir() and not os.access(existing, os.W_OK | os.X_OK):
        read_only = bool(os.statvfs(existing).f_flag & os.ST_RDONLY)
        reason = "read-only file system" if read_only else f"{existing} is not writable"
        raise PermissionError(f"--out: cannot write {out}: {reason}")


def _predict(args: argparse.Namespace) -> int:
    from rndpo.inference import predict_path
    from rndpo.nets import load_model
    from rndpo.pipeline.rundir import check_device

    check_device(args.device)
    model_path = Path(args.model)
    if not Path(args.images).exists():
        raise FileNotFoundError(f"--images: {args.images} not found")
    inputs = {
        "--images": args.images,
        "model": model_path.with_suffix(".pt"),
        "model description": model_path.with_suffix(".json"),
    }
    _check_out(args.out, inputs)
    model = load_model(args.model)
    written = predict_path(
        model,
        args.images,
        args.out,
        probs=args.probs,
        batch_size=args.batch_size,
        device=args.device,
        overwrite=args.overwrite,
    )
    print(f"{len(written)} files written:")
    for path in written:
        print(f"  {path}")
    return 0


def _load_npy(path: str, name: str, *, mmap: bool) -> Any:
    import numpy as np

    from rndpo.data.input_limits import check_npy_file

    check_npy_file(path, name)  # the declared shape against the caps, before anything is allocated
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, EOFError, OSError) as err:
        raise ValueError(
            f"{name}: {path} is not a readable .npy file ({err or type(err).__name__})"
        ) from None


def _mine(args: argparse.Namespace) -> int:

    from rndpo.mining import mine_pairs
    from rndpo.storage import write_npz

    for name in ("masks", "scores"):
        if not Path(getattr(args, name)).is_file():
            raise FileNotFoundError(f"{name}: file not found: {getattr(args, name)}")
    _check_out(args.out, {"masks": args.masks, "scores": args.scores})
    out = Path(args.out)
    if out.is_dir():
        raise IsADirectoryError(f"--out: {out} is a folder; name the output .npz file")
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"--out: {out} exists; pass --overwrite to replace it")
    masks = _load_npy(args.masks, "masks", mmap=True)
    scores = _load_npy(args.scores, "scores", mmap=False)
    pairs = mine_pairs(
        masks,
        scores,
        args.strategy,
        min_margin=args.min_margin,
        min_region=args.min_region,
        max_region=args.max_region,
        max_pairs_per_image=args.max_pairs_per_image,
        seed=args.seed,
        max_region_fraction=args.max_region_fraction,
        num_classes=args.num_classes,
    )
    arrays = {k: getattr(pairs, k) for k in ("image", "chosen", "rejected", "region_size", "margin")}
    try:
        write_npz(out, **arrays)
    except OSError as err:  # a full disk: name the output, not the temporary file
        if err.filename is None:
            err.filename = str(out)
        raise
    print(f"{len(pairs)} pairs written to {args.out}")
    return 0


_USER_ERRORS = (
    ValueError,
    TypeError,
    FileNotFoundError,
    FileExistsError,
    NotADirectoryError,
    IsADirectoryError,
    PermissionError,
    ImportError,
)


def _read_errors() -> tuple[type[BaseException], ...]:
    """The errors libraries raise on a corrupt or truncated file (those of nibabel and Pillow only once
    they are imported: they cannot have been raised before). Called when an exception is being matched."""
    found: list[type[BaseException]] = [zipfile.BadZipFile, EOFError, pickle.UnpicklingError, zlib.error]
    nib = sys.modules.get("nibabel.filebasedimages")
    pil = sys.modules.get("PIL")
    found += [nib.ImageFileError] if nib is not None else []
    found += [pil.UnidentifiedImageError] if pil is not None else []
    return tuple(found)


def _written_path(name: str | bytes) -> tuple[str, bool]:
    """The output an atomic write was writing when the file ``name`` failed, and whether ``name`` was its
    temporary file (``.<name>.<8 hex>.tmp``, see :data:`rndpo.storage.TEMP_PATTERN`)."""
    from rndpo.storage import TEMP_PATTERN

    path = Path(os.fsdecode(name))
    temporary = TEMP_PATTERN.fullmatch(path.name)
    if temporary:
        return str(path.with_name(temporary.group(1))), True
    return str(path), False


def _error_line(err: BaseException) -> str | None:
    """The one line for an expected error, None for an unexpected one (it keeps its traceback)."""
    from rndpo.storage import WRITE_ERRORS

    if isinstance(err, OSError) and err.errno in WRITE_ERRORS and isinstance(err.filename, str | bytes):
        output, temporary = _written_path(err.filename)
        if temporary or err.errno not in (errno.EACCES, errno.EPERM):  # EACCES also comes from reading
            return f"cannot write {output}: {WRITE_ERRORS[err.errno]}"
    if isinstance(err, _USER_ERRORS):
        return " ".join(line.strip() for line in str(err).splitlines() if line.strip())
    if isinstance(err, _read_errors()):
        text = str(err).strip().splitlines()
        return (
            f"cannot read an input file: {type(err).__name__}: {text[0] if text else 'corrupt or truncated'}"
        )
    return None


def _expected_kinds() -> tuple[type[BaseException], ...]:
    return (*_USER_ERRORS, OSError, *_read_errors())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rndpo`` command; returns the process exit code."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        _apply_limits(args)
        if args.command == "mine":
            return _mine(args)
        if args.command == "predict":
            return _predict(args)
        if args.command == "config":
            return _config(args)
        if args.command == "demo":
            import copy

            return _run(args, copy.deepcopy(DEMO_CONFIG))
        from rndpo.config import read_toml

        return _run(args, read_toml(args.config))
    except _expected_kinds() as err:  # every expected kind; _error_line re-raises the others
        message = _error_line(err)
        if message is None:
            raise
        print(f"rndpo: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
