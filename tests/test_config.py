"""TOML run configs: defaults, presets, overrides and errors that name the key."""

from __future__ import annotations

import pytest

from rndpo.config import (
    METHOD_PRESETS,
    ConfigError,
    RunConfig,
    config_from_dict,
    config_to_dict,
    load_config,
)


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
        ({"base": {"steps": 0}}, "[base]"),
        ({"proposals": {"sources": ["dreams"]}}, "[proposals]"),
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

    for path in sorted((Path(__file__).parents[1] / "configs").glob("*.toml")):
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
