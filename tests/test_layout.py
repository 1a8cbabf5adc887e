"""The package's layout by stage: imports point one way (earlier stages never import later ones), no
import cycle, no private name crosses a subpackage, and every public name the README shows imports.

The stage order below is the one place it is written; README's "Architecture" section describes it.
"""

from __future__ import annotations

import ast
import importlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

import rndpo
from rndpo.config import NETWORK_NAMES

PACKAGE = Path(rndpo.__file__).parent
README = Path(__file__).resolve().parents[1] / "README.md"

#: the stages of the work, earliest first; a module may import its own stage or earlier ones only.
#: "rndpo" is the package's own __init__ (the mining API and __version__); "_core" the Rust extension.
STAGES: tuple[tuple[str, ...], ...] = (
    ("config", "data", "storage", "_core"),
    ("mining", "rndpo"),
    ("losses",),
    ("nets",),
    ("inference",),
    ("metrics",),
    ("proposals",),
    ("judges",),
    ("training",),
    ("pipeline",),
    ("cli", "__main__"),
)
RANK = {name: i for i, names in enumerate(STAGES) for name in names}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def is_module(name: str) -> bool:
    rel = Path(*name.split(".")[1:]) if "." in name else Path()
    return (PACKAGE / rel).with_suffix(".py").is_file() or (PACKAGE / rel / "__init__.py").is_file()


def imports(path: Path) -> Iterator[tuple[str, str, int]]:
    """(imported module, imported name or "", line) for every rndpo import in the file, lazy ones too."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "rndpo":
                    yield alias.name, "", node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "rndpo":
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                if is_module(sub) or sub == "rndpo._core":
                    yield sub, "", node.lineno
                else:
                    yield node.module, alias.name, node.lineno


def stage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "rndpo"


def import_graph() -> dict[str, set[str]]:
    return {mod: {target for target, _, _ in imports(path)} for mod, path in modules().items()}


def test_every_module_has_a_stage() -> None:
    unknown = sorted({stage(m) for m in modules()} - set(RANK))
    assert not unknown, f"modules outside the stage order {STAGES}: {unknown}"


def test_no_import_from_a_later_stage() -> None:
    wrong = [
        f"{mod} (stage {stage(mod)}) imports {target} (stage {stage(target)}), line {line}"
        for mod, path in modules().items()
        for target, _, line in imports(path)
        if RANK[stage(target)] > RANK[stage(mod)]
    ]
    assert not wrong, "\n".join(wrong)


def test_no_import_cycle() -> None:
    graph = import_graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_cycle_check_finds_a_planted_cycle(monkeypatch: pytest.MonkeyPatch) -> None:
    """The checks above can fail: a graph with a known cycle and a known upward import is caught."""
    planted = {"rndpo.a": {"rndpo.b"}, "rndpo.b": {"rndpo.a"}}
    monkeypatch.setattr(f"{__name__}.import_graph", lambda: planted)
    with pytest.raises(AssertionError, match=r"rndpo\.a -> rndpo\.b -> rndpo\.a"):
        test_no_import_cycle()


def test_no_private_name_crosses_a_subpackage() -> None:
    """Private names stay inside their subpackage; the compiled extension (``_core``) and a
    subpackage's own private modules (the losses' Triton kernels) are the exceptions."""
    wrong = []
    for mod, path in modules().items():
        for target, name, line in imports(path):
            private = (name.startswith("_") and not name.startswith("__")) or target.split(".")[
                -1
            ].startswith("_")
            if private and target != "rndpo._core" and stage(target) != stage(mod):
                wrong.append(f"{mod} imports {name or target} from {target}, line {line}")
    assert not wrong, "\n".join(wrong)


def test_faces_only_hand_names_on() -> None:
    """A subpackage's __init__.py holds a docstring, imports of its own modules and __all__."""
    for init in sorted(PACKAGE.glob("*/__init__.py")):
        for node in ast.parse(init.read_text()).body:
            if isinstance(node, ast.ImportFrom):
                assert node.module and node.module.startswith(f"rndpo.{init.parent.name}."), init
            elif isinstance(node, ast.Assign):
                assert [getattr(t, "id", None) for t in node.targets] == ["__all__"], init
            else:
                assert isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant), init


def test_no_module_over_550_lines() -> None:
    long = {m: n for m, p in modules().items() if (n := len(p.read_text().splitlines())) > 550}
    assert not long, f"modules over 550 lines: {long}"


#: public names users rely on (the issue's list); README's names are added below
PUBLIC = (
    "rndpo.mine_pairs",
    "rndpo.pairwise_stats",
    "rndpo.PairSet",
    "rndpo.PairwiseStats",
    "rndpo.load_model",
    "rndpo.predict",
    "rndpo.__version__",
    "rndpo.losses.preference_loss",
    "rndpo.losses.PreferenceLoss",
    "rndpo.data.load_npz",
    "rndpo.data.load_folder",
    "rndpo.data.load_nifti",
    "rndpo.data.SegmentationDataset",
    "rndpo.nets.build_network",
    "rndpo.judges.build_judge",
    "rndpo.pipeline.run_experiment",
    "rndpo.pipeline.Stages",
    "rndpo.cli.main",
)


def readme_names() -> set[str]:
    """Every dotted ``rndpo.<...>`` name and every ``from rndpo... import a, b`` the README shows."""
    text = README.read_text()
    names = set(re.findall(r"\brndpo(?:\.[A-Za-z_][A-Za-z0-9_]*)+", text))
    for module, listed in re.findall(r"from (rndpo[\w.]*) import ([\w, ]+)", text):
        names |= {f"{module}.{n.strip()}" for n in listed.split(",") if n.strip()}
    names -= set(NETWORK_NAMES)  # the network registry's names ("rndpo.UNet") are not attributes
    return {n for n in names if not n.endswith((".py", ".toml", ".log", ".json", ".lock"))}


def resolve(dotted: str) -> object:
    """Import the longest module prefix of ``dotted`` and get the rest as attributes."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(dotted)


def test_readme_shows_public_names() -> None:
    assert len(readme_names()) > 10  # the scan reads the README's code and prose


@pytest.mark.parametrize("name", sorted(set(PUBLIC) | readme_names()))
def test_public_name_imports(name: str) -> None:
    assert resolve(name) is not None
