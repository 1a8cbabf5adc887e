"""TOML run configs: defaults, presets, overrides and errors that name the key."""

from __future__ import annotations

import ast
import dataclasses
import math
import re
import sys
from pathlib import Path
from typing import Any

import pytest

import rndpo.config
from rndpo.config import (
    METHOD_PRESETS,
    NETWORK_NAMES,
    SECTIONS,
    BaseTrainConfig,
    ConfigError,
    DataConfig,
    FinetuneConfig,
    JudgeConfig,
    MethodConfig,
    MiningConfig,
    ModelConfig,
    OptimizerConfig,
    ProposalConfig,
    RunConfig,
    config_from_dict,
    config_to_dict,
    config_toml,
    load_config,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def test_empty_config_is_the_default() -> None:
    assert config_from_dict({}) == RunConfig()


def test_round_trip_through_dict() -> None:
    cfg = config_from_dict(
        {
            "data": {"kind": "synthetic", "n_images": 50, "image_size": 32},
            "methods": {"rn": {"preset": "rndpo", "beta": 2.0}, "dpo": {}},
            "mining": {"strategies": ["adjacent", "all_pairs"], "min_margin": 0.1},
            "seeds": [3, 4],
        }
    )
    assert cfg.data.n_images == 50
    assert cfg.methods["rn"].beta == 2.0 and cfg.methods["rn"].region_power == 1.0
    assert cfg.methods["dpo"] == METHOD_PRESETS["dpo"]
    assert cfg.mining.strategies == ("adjacent", "all_pairs")
    assert config_from_dict(config_to_dict(cfg)) == cfg


def test_method_list_of_presets() -> None:
    cfg = config_from_dict({"methods": ["sft_top", "rndpo"]})
    assert list(cfg.methods) == ["sft_top", "rndpo"]


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (
            {"data": {"kind": "png"}},
            "data.kind must be one of ['synthetic', 'npz', 'folder', 'nifti'], got 'png'",
        ),
        ({"data": {"colour": 1}}, "unknown key data.colour"),
        ({"data": {"kind": "npz"}}, "data.path is required"),
        ({"mining": {"strategies": ["best"]}}, "unknown strategy 'best'; valid choices"),
        ({"mining": {"strategies": ["all_pairs:x"]}}, "margin of 'all_pairs:x' must be a number"),
        ({"mining": {"strategies": ["all_pairs:-1"]}}, "margin of 'all_pairs:-1' must be >= 0"),
        ({"mining": {"min_region": 10, "max_region": 5}}, "mining.max_region (5) must be >= min_region (10)"),
        ({"judges": {"names": ["psychic"]}}, "unknown judge 'psychic'"),
        ({"judges": {"reliabilities": [1.5]}}, "judges.reliabilities must lie in [0, 1]"),
        ({"methods": ["magic"]}, "unknown preset 'magic'"),
        ({"methods": {"x": {"loss_type": "square"}}}, "methods.x.loss_type must be one of"),
        ({"methods": {"x": {"beta": -1.0}}}, "methods.x.beta must be > 0"),
        (
            {"methods": {"x": {"label_smoothing": 0.1}}},
            "methods.x.label_smoothing applies to loss_type robust",
        ),
        ({"methods": {"x": {"chosen_sft_weight": -1.0}}}, "methods.x.chosen_sft_weight must be >= 0"),
        (
            {"methods": {"x": {"preset": "sft_top", "chosen_sft_weight": 1.0}}},
            "methods.x.chosen_sft_weight applies to objective preference, got objective 'sft_top'",
        ),
        ({"finetune": {"steps": "many"}}, "finetune.steps must be an integer, got str"),
        ({"finetune": {"steps": 0}}, "finetune.steps must be >= 1"),
        ({"base": {"steps": 0}}, "base.steps must be >= 1, got 0"),
        ({"proposals": {"sources": ["dreams"]}}, "proposals.sources: unknown source 'dreams'"),
        ({"model": {"name": "resnet"}}, "model.name must be one of ['rndpo.UNet', 'monai.UNet'"),
        ({"model": {"kwargs": [1]}}, "model.kwargs must be a table with string keys, got list"),
        ({"model": {"kwargs": {"in_channels": 3}}}, "model.kwargs.in_channels is set from the data"),
        ({"sedes": [1]}, "unknown top-level key 'sedes'"),
        ({"seeds": []}, "seeds must list at least one seed"),
    ],
)
def test_invalid_configs_name_the_key(raw, needle) -> None:
    with pytest.raises(ConfigError) as err:
        config_from_dict(raw)
    assert needle in str(err.value)


def test_load_config_errors(tmp_path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[data\nkind = 1")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(bad)


def test_shipped_example_configs_are_valid() -> None:
    from pathlib import Path

    for path in sorted((Path(__file__).parents[2] / "configs").glob("*.toml")):
        cfg = load_config(path)
        assert cfg.data.kind in ("npz", "folder"), path
        assert cfg.data.kind == "npz" or cfg.data.unlabeled_path, path  # the folder one: production layout


def test_strategy_with_its_own_margin() -> None:
    cfg = config_from_dict({"mining": {"strategies": ["top_vs_rest", "all_pairs:0.05"], "min_margin": 0.01}})
    assert cfg.mining.parse_strategy("all_pairs:0.05") == ("all_pairs", 0.05)
    assert cfg.mining.parse_strategy("top_vs_rest") == ("top_vs_rest", 0.01)


def test_a_methods_loss_options_are_exactly_preference_losss_options() -> None:
    import inspect

    from rndpo.config import METHOD_PRESETS
    from rndpo.losses import preference_loss

    keyword_only = {
        name
        for name, p in inspect.signature(preference_loss).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }
    for preset in METHOD_PRESETS.values():
        options = preset.loss_options()
        assert set(options) == keyword_only
        assert all(options[k] == getattr(preset, k) for k in options)


@pytest.mark.parametrize(
    ("key", "value"),
    [("qc_synthetic", -1), ("qc_rank_weight", -0.5), ("qc_rank_weight", float("inf")), ("qc_jitter", 1.0)],
)
def test_learned_qc_keys_are_checked(key: str, value: float) -> None:
    with pytest.raises(ConfigError, match=f"judges.{key}"):
        config_from_dict({"judges": {key: value}})


# ---- one error contract: a section built in Python fails like one read from TOML ----

# (section class, TOML table, key, bad value, message); the message names section.key
BAD_SECTION_VALUES = [
    (DataConfig, "data", "kind", "png", "data.kind must be one of"),
    (DataConfig, "data", "image_size", 4, "data.image_size must be >= 8, got 4"),
    (DataConfig, "data", "n_images", 0, "data.n_images must be >= 1, got 0"),
    (DataConfig, "data", "n_images", "many", "data.n_images must be an integer, got str 'many'"),
    (DataConfig, "data", "label_budget", 1.5, "data.label_budget must be a share"),
    (DataConfig, "data", "val_fraction", 1.0, "data.val_fraction must be in [0, 1), got 1.0"),
    (DataConfig, "data", "nifti_axis", 3, "data.nifti_axis must be one of 0, 1, 2"),
    (DataConfig, "data", "max_unlabeled", 0, "data.max_unlabeled must be >= 1"),
    (DataConfig, "data", "seed", 1.5, "data.seed must be an integer, got float 1.5"),
    (ModelConfig, "model", "name", "resnet", "model.name must be one of ['rndpo.UNet'"),
    (ModelConfig, "model", "channels", (8, 0), "model.channels must be positive integers"),
    (ModelConfig, "model", "channels", (8, 1.5), "model.channels[1] must be an integer, got float 1.5"),
    (ModelConfig, "model", "dropout", 1.0, "model.dropout must be in [0, 1), got 1.0"),
    (ModelConfig, "model", "kwargs", "x", "model.kwargs must be a table with string keys, got str 'x'"),
    (ModelConfig, "model", "kwargs", {1: 2}, "model.kwargs must be a table with string keys"),
    (ModelConfig, "model", "kwargs", {"out_channels": 2}, "model.kwargs.out_channels is set from the data"),
    (ModelConfig, "model", "kwargs", {"act": None}, "model.kwargs.act must be a number, string"),
    (ModelConfig, "model", "kwargs", {"w": [math.inf]}, "model.kwargs.w[0] must be a finite number"),
    (BaseTrainConfig, "base", "steps", 0, "base.steps must be >= 1, got 0"),
    (BaseTrainConfig, "base", "steps", True, "base.steps must be an integer, got bool True"),
    (BaseTrainConfig, "base", "batch_size", 0, "base.batch_size must be >= 1, got 0"),
    (BaseTrainConfig, "base", "lr", -1.0, "base.lr must be > 0, got -1.0"),
    (BaseTrainConfig, "base", "lr", math.nan, "base.lr must be a finite number, got float nan"),
    (BaseTrainConfig, "base", "weight_decay", -0.1, "base.weight_decay must be >= 0, got -0.1"),
    (BaseTrainConfig, "base", "schedule", "step", "base.schedule must be one of ['cosine', 'constant']"),
    (BaseTrainConfig, "base", "augment", 1, "base.augment must be true or false, got int 1"),
    (BaseTrainConfig, "base", "max_rotation", 200.0, "base.max_rotation must be in [0, 180]"),
    (BaseTrainConfig, "base", "eval_every", 0, "base.eval_every must be >= 1, got 0"),
    (BaseTrainConfig, "base", "n_snapshots", -1, "base.n_snapshots must be >= 0, got -1"),
    (BaseTrainConfig, "base", "cooldown", -0.1, "base.cooldown must be in [0, 1], got -0.1"),
    (BaseTrainConfig, "base", "cooldown", 1.5, "base.cooldown must be in [0, 1], got 1.5"),
    (BaseTrainConfig, "base", "n_snapshots", 2500, "base.n_snapshots must be <= base.steps = 2000, got 2500"),
    (ProposalConfig, "proposals", "k", 0, "proposals.k must be >= 1, got 0"),
    (ProposalConfig, "proposals", "sources", ("tta", "flip"), "proposals.sources: unknown source 'flip'"),
    (ProposalConfig, "proposals", "sources", (), "proposals.sources must name at least one"),
    (ProposalConfig, "proposals", "sources", ("tta", "tta"), "proposals.sources must not repeat"),
    (
        ProposalConfig,
        "proposals",
        "threshold_low",
        0.9,
        "proposals.threshold_low and proposals.threshold_high",
    ),
    (ProposalConfig, "proposals", "mc_dropout_p", 0.0, "proposals.mc_dropout_p must be in (0, 1)"),
    (ProposalConfig, "proposals", "tta_degrees", 91.0, "proposals.tta_degrees must be in [0, 90]"),
    (ProposalConfig, "proposals", "morph_radius", 0, "proposals.morph_radius must be >= 1, got 0"),
    (JudgeConfig, "judges", "names", ("psychic",), "judges.names: unknown judge 'psychic'"),
    (JudgeConfig, "judges", "names", (), "judges.names must name at least one judge"),
    (JudgeConfig, "judges", "reliabilities", (1.5,), "judges.reliabilities must lie in [0, 1]"),
    (JudgeConfig, "judges", "uncertainty_mode", "vibes", "judges.uncertainty_mode must be one of"),
    (JudgeConfig, "judges", "qc_steps", 0, "judges.qc_steps must be >= 1"),
    (JudgeConfig, "judges", "qc_tta", "yes", "judges.qc_tta must be true or false"),
    (MiningConfig, "mining", "strategies", ("best",), "mining.strategies: unknown strategy 'best'"),
    (MiningConfig, "mining", "strategies", (), "mining.strategies must name at least one strategy"),
    (MiningConfig, "mining", "min_margin", -0.1, "mining.min_margin must be a number >= 0"),
    (MiningConfig, "mining", "min_region", -1, "mining.min_region must be >= 0"),
    (MiningConfig, "mining", "max_region", 0, "mining.max_region must be >= 1"),
    (MiningConfig, "mining", "max_pairs_per_image", "2", "mining.max_pairs_per_image must be an integer"),
    (MiningConfig, "mining", "max_region_fraction", 0.0, "mining.max_region_fraction must be a finite"),
    (FinetuneConfig, "finetune", "steps", 0, "finetune.steps must be >= 1, got 0"),
    (FinetuneConfig, "finetune", "steps", 2.5, "finetune.steps must be an integer, got float 2.5"),
    (FinetuneConfig, "finetune", "lr", 0.0, "finetune.lr must be > 0, got 0.0"),
    (FinetuneConfig, "finetune", "weight_decay", -1.0, "finetune.weight_decay must be >= 0"),
    (
        FinetuneConfig,
        "finetune",
        "schedule",
        "step",
        "finetune.schedule must be one of ['cosine', 'constant']",
    ),
    (FinetuneConfig, "finetune", "warmup_steps", -1, "finetune.warmup_steps must be >= 0"),
    (FinetuneConfig, "finetune", "grad_clip", -1.0, "finetune.grad_clip must be >= 0"),
    (FinetuneConfig, "finetune", "final_window", 0, "finetune.final_window must be >= 1"),
    (FinetuneConfig, "finetune", "rounds", 0, "finetune.rounds must be >= 1"),
    (
        FinetuneConfig,
        "finetune",
        "reference",
        "ema",
        "finetune.reference must be one of ['base', 'previous']",
    ),
    (MethodConfig, "methods.x", "objective", "magic", "methods.<name>.objective must be one of"),
    (MethodConfig, "methods.x", "beta", 0.0, "methods.<name>.beta must be > 0"),
    (MethodConfig, "methods.x", "label_smoothing", "high", "methods.<name>.label_smoothing must be a finite"),
    (MethodConfig, "methods.x", "ema_decay", 1.0, "methods.<name>.ema_decay must be in [0, 1)"),
    (MethodConfig, "methods.x", "confidence", 0.4, "methods.<name>.confidence must be in [0.5, 1)"),
]


def _toml_form(value: object) -> object:
    return list(value) if isinstance(value, tuple) else value


@pytest.mark.parametrize(
    ("cls", "table", "key", "value", "message"),
    BAD_SECTION_VALUES,
    ids=[f"{table}.{key}={value!r}" for _, table, key, value, _ in BAD_SECTION_VALUES],
)
def test_a_bad_value_is_a_config_error_naming_section_and_key_from_python_and_toml(
    cls: type, table: str, key: str, value: object, message: str
) -> None:
    with pytest.raises(ConfigError) as err:
        cls(**{key: value})
    assert message in str(err.value)
    assert isinstance(err.value, ValueError)
    if (isinstance(value, float) and math.isnan(value)) or value is None:
        return
    raw: dict[str, object] = {table: {key: _toml_form(value)}}
    if table.startswith("methods."):
        raw = {"methods": {"x": {key: _toml_form(value)}}}
    with pytest.raises(ConfigError) as err:
        config_from_dict(raw)
    assert message.replace("methods.<name>", "methods.x") in str(err.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"seeds": ()}, "seeds must list at least one seed"),
        ({"seeds": [0]}, "seeds must be a tuple in Python (a list in TOML), got list [0]"),
        ({"seeds": (-1,)}, "seeds must be integers >= 0, got -1"),
        ({"seeds": (0.5,)}, "seeds[0] must be an integer, got float 0.5"),
        ({"device": 0}, "device must be a string, got int 0"),
        ({"base": {"steps": 3}}, "base must be a BaseTrainConfig, got dict"),
        ({"methods": {}}, "methods must name at least one method"),
        ({"methods": {"a/b": METHOD_PRESETS["dpo"]}}, "methods: a method name must be a plain name"),
        ({"methods": {"x": "dpo"}}, "methods.x must be a MethodConfig, got str 'dpo'"),
    ],
)
def test_a_bad_run_config_built_in_python_is_a_config_error(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        RunConfig(**kwargs)  # type: ignore[arg-type]
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("raw", "needles"),
    [
        ({"base": {"seed": 3}}, ["base.seed was removed", "top-level `seeds`"]),
        ({"base": {"device": "cuda"}}, ["base.device was removed", "top-level `device`"]),
        ({"proposals": {"seed": 3}}, ["proposals.seed was removed", "top-level `seeds`"]),
    ],
)
def test_keys_a_run_sets_are_removed_with_a_pointer_to_what_sets_them(raw, needles) -> None:
    with pytest.raises(ConfigError) as err:
        config_from_dict(raw)
    assert all(n in str(err.value) for n in needles), str(err.value)
    section, table = next(iter(raw.items()))
    assert next(iter(table)) not in {f.name for f in dataclasses.fields(SECTIONS[section])}


def test_the_optimizer_fields_are_defined_once_with_each_sections_defaults() -> None:
    shared = [f.name for f in dataclasses.fields(OptimizerConfig)]
    assert shared == ["steps", "batch_size", "lr", "weight_decay", "schedule", "warmup_steps"]
    for cls in (BaseTrainConfig, FinetuneConfig):
        assert issubclass(cls, OptimizerConfig)
        assert [f.name for f in dataclasses.fields(cls)][: len(shared)] == shared
    defaults = {"steps": 300, "batch_size": 16, "lr": 2e-3, "schedule": "cosine"}
    # the base model trains to convergence: a cap of 2000 steps, constant lr after a warm-up, patience
    assert config_to_dict(BaseTrainConfig()) == {
        **defaults,
        "steps": 2000,
        "schedule": "constant",
        "weight_decay": 1e-4,
        "augment": True,
        "max_rotation": 15.0,
        "flip_axes": None,
        "eval_every": 25,
        "n_snapshots": 3,
        "warmup_steps": 30,
        "patience": 8,
        "min_delta": 0.0,
        "patience_window": 3,
        "cooldown": 0.2,
    }
    assert config_to_dict(FinetuneConfig()) == {
        **defaults,
        "weight_decay": 0.0,
        "warmup_steps": 30,
        "grad_clip": 1.0,
        "augment": True,
        "eval_every": 25,
        "final_window": 3,
        "rounds": 1,
        "reference": "base",
    }


def test_model_name_and_kwargs() -> None:
    assert ModelConfig().name == "rndpo.UNet" and ModelConfig().kwargs == {}
    assert NETWORK_NAMES == ("rndpo.UNet", "monai.UNet", "monai.BasicUNet", "monai.SegResNet")
    text = (
        '[model]\nname = "monai.SegResNet"\n'
        'kwargs = {init_filters = 16, blocks_down = [1, 2], "a b" = {c = 0.5}}\n'
    )
    cfg = config_from_dict(tomllib.loads(text))
    assert cfg.model.name == "monai.SegResNet"
    assert cfg.model.kwargs == {"init_filters": 16, "blocks_down": [1, 2], "a b": {"c": 0.5}}
    assert config_from_dict(tomllib.loads(config_toml(cfg))) == cfg
    assert config_from_dict(config_to_dict(cfg)) == cfg
    given = {"init_filters": 8}
    model = ModelConfig(name="monai.SegResNet", kwargs=given)
    given["init_filters"] = 4
    assert model.kwargs == {"init_filters": 8}  # the section keeps its own copy
    with pytest.raises(ConfigError, match=r"model.name must be one of \['rndpo.UNet', 'monai.UNet', "):
        config_from_dict({"model": {"name": "monai.ResNet"}})


def test_the_config_subpackage_imports_nothing_else_from_rndpo() -> None:
    folder = Path(rndpo.config.__file__).parent
    for path in sorted(folder.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rndpo"):
                assert node.module.startswith("rndpo.config"), f"{path.name} imports {node.module}"
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"{path.name} imports private names {private}"
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("rndpo") for a in node.names), path.name


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("base.seed=3", "base.seed was removed"),
        ("proposals.seed=3", "proposals.seed was removed"),
        ('model.name="monai.ResNet"', "model.name must be one of"),
        ("base.lr=-1", "base.lr must be > 0, got -1.0"),
    ],
)
def test_the_cli_prints_a_config_error_as_one_line_and_exits_2(
    override: str, needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from rndpo.cli import main

    assert main(["config", "--defaults", "--set", override]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rndpo: error: ") and len(err.splitlines()) == 1 and needle in err, err


def test_the_cli_sets_model_kwargs_as_an_inline_table(capsys: pytest.CaptureFixture[str]) -> None:
    from rndpo.cli import main

    args = [
        "config",
        "--defaults",
        "--set",
        'model.name="monai.SegResNet"',
        "--set",
        "model.kwargs={init_filters=16}",
    ]
    assert main(args) == 0
    cfg = config_from_dict(tomllib.loads(capsys.readouterr().out))
    assert cfg.model == ModelConfig(name="monai.SegResNet", kwargs={"init_filters": 16})


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ({"data": {"kind": "nifti"}}, "data.kind = 'nifti' needs data.path (a dataset folder"),
        (
            {"data": {"kind": "nifti", "path": "D", "nifti_images": ["a"], "nifti_masks": ["b"]}},
            "are two routes; set one of them",
        ),
        ({"data": {"kind": "npz", "path": "x.npz", "spatial_dims": 4}}, "data.spatial_dims must be 2 or 3"),
        ({"data": {"kind": "folder", "path": "f", "spatial_dims": 3}}, "does not fit data.kind = 'folder'"),
        ({"data": {"kind": "npz", "path": "x.npz", "labels": {"a": 1}}}, "data.labels names the structures"),
        ({"model": {"patch_size": [32, 2, 32]}}, "model.patch_size must be one int >= 4 per spatial axis"),
        ({"model": {"spatial_dims": 2, "patch_size": [8, 8, 8]}}, "model.patch_size must be one int"),
        ({"model": {"inference_size": [48, 3, 48]}}, "model.inference_size must be one int >= 4"),
        ({"model": {"patch_size": [8, 8], "inference_size": [8, 8, 8]}}, "model.inference_size must be"),
        ({"base": {"flip_axes": [0, 0]}}, "base.flip_axes must be distinct axes among 0, 1, 2"),
    ],
)
def test_volume_keys_are_checked_when_the_config_is_read(raw: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(needle)):
        config_from_dict(raw)


def test_volume_keys_resolve() -> None:
    folder = config_from_dict({"data": {"kind": "nifti", "path": "Dataset004"}})
    npz = config_from_dict(
        {
            "data": {
                "kind": "npz",
                "path": "v.npz",
                "spatial_dims": 3,
                "labels": {"anterior": 1, "posterior": 2},
            }
        }
    )
    slices = config_from_dict({"data": {"kind": "nifti", "nifti_images": ["a"], "nifti_masks": ["b"]}})
    assert (folder.data.volume_dims, npz.data.volume_dims, slices.data.volume_dims) == (3, 3, 2)
    assert npz.data.labels == {"anterior": 1, "posterior": 2}
