"""`rndpo config --defaults` is a complete, commented TOML of every key, and the README's config reference
is exactly its output."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest

from rndpo.cli import main
from rndpo.config import SECTIONS, RunConfig, config_from_dict, config_toml, load_config

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_parse_back_to_the_default_config_with_every_key_commented(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["config", "--defaults"]) == 0
    text = capsys.readouterr().out
    assert config_from_dict(tomllib.loads(text)) == RunConfig()
    for name, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            lines = [
                ln
                for ln in text.split(f"[{name}]\n", 1)[1].splitlines()
                if ln.lstrip("# ").startswith(f"{f.name} =")
            ]
            assert lines, f"{name}.{f.name} missing"
            assert f"# {f.metadata['help']}" in lines[0], f"{name}.{f.name} lacks its help text"


def test_a_config_file_resolves_to_toml_that_loads_back(tmp_path: Path) -> None:
    for path in sorted((ROOT / "configs").glob("*.toml")):
        config = load_config(path)
        assert config_from_dict(tomllib.loads(config_toml(config))) == config, path.name
    custom = tmp_path / "c.toml"
    custom.write_text('[methods]\nmine = {preset = "rndpo", beta = 2.0}\n')
    config = load_config(custom)
    assert config_from_dict(tomllib.loads(config_toml(config))) == config


def test_readme_config_reference_is_the_generated_one() -> None:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("<!-- config-defaults:start")
    block = readme[start:].split("```toml\n", 1)[1].split("```\n<!-- config-defaults:end -->", 1)[0]
    assert block == config_toml(), "README config reference is stale: paste `rndpo config --defaults` into it"
