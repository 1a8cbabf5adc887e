"""Config values that would fail only after training, or run nothing, are refused when the config is read
(rndpo.config.bounds), naming the key, the bound and the value; the loss refuses a region_power whose
|D| ** p overflows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from rndpo.cli import main
from rndpo.config import METHOD_PRESETS, ConfigError, config_from_dict, load_config
from rndpo.losses import preference_loss
from runs import TINIEST, write_config

ROOT = Path(__file__).resolve().parents[2]

# (raw config, key the message names, text of the bound or reason it states)
REFUSED: list[tuple[dict[str, Any], str, str]] = [
    ({"methods": {"dpo": {"beta": 1e300}}}, "methods.dpo.beta", "[1e-06, 10000]"),
    ({"methods": {"dpo": {"beta": 1e-9}}}, "methods.dpo.beta", "[1e-06, 10000]"),
    ({"methods": {"rndpo": {"region_power": 50.0}}}, "methods.rndpo.region_power", "[0, 4]"),
    ({"methods": {"rndpo": {"anchor_weight": 1e300}}}, "methods.rndpo.anchor_weight", "[0, 10000]"),
    ({"methods": {"a" * 230: {"preset": "dpo"}}}, "methods.aaaa", "255-byte limit"),
    ({"methods": {"a" * 175: {"preset": "dpo"}}, "seeds": [4294967295]}, "methods.aaaa", "255-byte limit"),
    ({"methods": {"a" * 175: {"preset": "dpo"}}, "finetune": {"rounds": 10**6}}, "methods.aaaa", "255-byte"),
    ({"mining": {"strategies": ["all_pairs:0." + "0" * 240 + "1"]}}, "mining.strategies", "255-byte limit"),
    ({"mining": {"max_region": 2**64}}, "mining.max_region", "[1, 2**63 - 1]"),
    ({"mining": {"min_region": 2**63}}, "mining.min_region", "[0, 2**63 - 1]"),
    ({"mining": {"max_pairs_per_image": 2**64}}, "mining.max_pairs_per_image", "[1, 2**63 - 1]"),
    ({"mining": {"min_margin": 1.0}}, "mining.min_margin", "[0, 1)"),
    ({"mining": {"strategies": ["all_pairs:inf"]}}, "mining.strategies[0] margin", "[0, 1)"),
    ({"mining": {"strategies": ["all_pairs", "all_pairs"]}}, "mining.strategies", "must not repeat"),
    ({"proposals": {"k": 100000}}, "proposals.k", "[1, 1024]"),
    ({"proposals": {"morph_radius": 10**6}}, "proposals.morph_radius", "[1, 64]"),
    ({"data": {"image_size": 100000}}, "data.image_size", "[8, 4096]"),
    ({"data": {"seed": -1}}, "data.seed", "[0, 2**32 - 1]"),
    ({"seeds": [2**70]}, "seeds[0]", "[0, 2**32 - 1]"),
    ({"model": {"patch_size": [32, 8192]}}, "model.patch_size[1]", "[4, 4096]"),
    ({"model": {"inference_size": [2048, 2048, 2048]}}, "model.inference_size", "2**31 voxels"),
    ({"model": {"channels": [8, 10**9]}}, "model.channels[1]", "[1, 4096]"),
    ({"finetune": {"lr": 1e300}}, "finetune.lr", "(0, 1]"),
    ({"base": {"lr": 0.01, "weight_decay": 100.0}}, "base.weight_decay", "1 / lr"),
    ({"judges": {"qc_synthetic": 10**7}}, "judges.qc_synthetic", "[0, 1024]"),
    ({"judges": {"names": ["noisy_oracle"], "reliabilities": []}}, "judges.reliabilities", "no noisy"),
    ({"judges": {"names": ["agreement", "agreement"]}}, "judges.names", "must not repeat"),
    ({"judges": {"reliabilities": [0.7, 0.7000001]}}, "judges.reliabilities", "same judge label"),
]


@pytest.mark.parametrize(("raw", "key", "bound"), REFUSED, ids=[k for _, k, _ in REFUSED])
def test_out_of_bound_values_are_refused_naming_key_bound_and_value(
    raw: dict[str, Any], key: str, bound: str
) -> None:
    with pytest.raises(ConfigError) as err:
        config_from_dict(raw)
    message = str(err.value)
    assert key in message and bound in message, message
    assert "\n" not in message


@pytest.mark.parametrize(
    "raw",
    [
        {"methods": {"rndpo": {"region_power": 1.0}, "dpo": {"beta": 0.01}}},
        {"methods": {"edge": {"preset": "rndpo", "region_power": 4.0, "beta": 1e4}}},
        {"methods": {"low": {"preset": "dpo", "beta": 1e-6}}},
        {"methods": {"a" * 175: {"preset": "dpo"}}, "seeds": [0]},
        {"proposals": {"k": 8}},
        {"proposals": {"k": 1024}, "data": {"image_size": 4096}},
        {"mining": {"max_region": 2**63 - 1, "min_region": 2**63 - 1, "max_pairs_per_image": 2**63 - 1}},
        {"mining": {"strategies": ["all_pairs:0.99"], "min_margin": 0.5}},
        {"seeds": [0, 2**32 - 1], "data": {"seed": 2**32 - 1}},
        {"judges": {"names": ["agreement"], "reliabilities": []}},
        {"model": {"patch_size": [1024, 1024, 2048]}},
    ],
)
def test_values_at_the_bounds_are_accepted(raw: dict[str, Any]) -> None:
    config_from_dict(raw)


def test_longest_accepted_method_name_just_fits() -> None:
    """The name budget is exact: the longest accepted name is the message's "at most N bytes"."""
    raw: dict[str, Any] = {"methods": {"a" * 300: {"preset": "dpo"}}}
    with pytest.raises(ConfigError, match=r"use at most (\d+) bytes") as err:
        config_from_dict(raw)
    allowed = int(err.value.args[0].split("use at most ")[1].split(" ")[0])
    config_from_dict({"methods": {"a" * allowed: {"preset": "dpo"}}})
    with pytest.raises(ConfigError, match="255-byte limit"):
        config_from_dict({"methods": {"a" * (allowed + 1): {"preset": "dpo"}}})


def test_presets_and_shipped_configs_still_load() -> None:
    config_from_dict({"methods": list(METHOD_PRESETS)})
    configs = sorted((ROOT / "configs").glob("*.toml"))
    assert configs
    for path in configs:
        load_config(path)


@pytest.mark.parametrize(
    "overrides",
    [
        ["methods={dpo={beta=1e300}}"],
        ["methods={" + "m" * 230 + "={preset='dpo'}}"],
        ["mining.max_region=18446744073709551616"],
        ["proposals.k=100000"],
        ["judges.reliabilities=[]"],
    ],
    ids=["beta", "long-name", "max_region", "k", "no-judge"],
)
def test_cli_refuses_before_making_any_folder(
    overrides: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, TINIEST)
    out = tmp_path / "out"
    flags = [f for o in overrides for f in ("--set", o)]
    assert main(["run", str(config), "--out", str(out), "--quiet", "--device", "cpu", *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rndpo: error: ") and len(err.splitlines()) == 1, err
    assert not out.exists()


def _pair(size: int, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(0)
    policy = torch.randn(2, 1, size, size, generator=gen, dtype=dtype, requires_grad=True)
    ref = torch.randn(2, 1, size, size, generator=gen, dtype=dtype)
    chosen = torch.ones(2, size, size, dtype=torch.bool)
    return policy, ref, chosen, torch.zeros_like(chosen)


@pytest.mark.parametrize("normalization", ["margin", "weight"])
def test_loss_refuses_a_region_power_whose_region_scale_overflows(normalization: str) -> None:
    # |D| = 4096 per pair: 4096 ** 12 = 2**144 is inf in float32
    with pytest.raises(ValueError, match=r"region_power .*float32.*\|D\| = 4096.*got 12"):
        preference_loss(*_pair(64), beta=1.0, region_power=12.0, normalization=normalization)  # type: ignore[arg-type]


def test_loss_keeps_region_powers_that_fit() -> None:
    out = preference_loss(*_pair(64), beta=1.0, region_power=1.0)
    out.loss.backward()
    assert torch.isfinite(out.loss) and bool((out.margins != 0).all())
    # the same power fits float64 accumulation, and a small image fits float32 (4 ** 12 = 2**24)
    assert torch.isfinite(preference_loss(*_pair(64, torch.float64), beta=1.0, region_power=12.0).loss)
    assert torch.isfinite(preference_loss(*_pair(2), beta=1.0, region_power=12.0).loss)
