"""The judge registry: the one place that knows how each judge is built, the default ensemble included.

Every name of :data:`rndpo.config.JUDGE_NAMES` has a :class:`JudgeSpec`: its class and what its
construction needs beyond its own keyword arguments:

- ``seeded`` (``noisy_oracle``): takes the ``seed`` of the run (its noise);
- ``trained`` (``learned_qc``): fitted on a bank of labeled proposals with settings from ``[judges]``
  (:class:`rndpo.config.JudgeConfig`), kept in a cache folder (:class:`FitSource`);
- ``composite`` (``ensemble``): combines other judges, its components, with their calibrated weights.

:func:`build_judge` builds any judge from a name, its kwargs and whatever generic context the caller has
(config, seed, a :class:`FitSource`, a builder of components); :func:`make_judge` is the user's entry
point (name and keyword arguments). The experiment pipeline asks this module, never a judge's name:

- :func:`calibration_judges`: which judges the validation calibration must score;
- :func:`calibration_settings`: what else belongs in the calibration stage's cache key;
- :func:`calibrated_kwargs`: a judge's kwargs for a run, given the calibration (a composite judge's
  components, weights and ranking scheme);
- :func:`key_settings`: the extra settings in a judge's cache keys (scores, fitted judge folder);
- :func:`judge_settings`: a judge's constructor settings from ``[judges]``.

Judge kwargs are plain data (they are part of cache keys); scores are float64 (N, K), see
:mod:`rndpo.judges.base`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rndpo.config import JUDGE_NAMES, JudgeConfig
from rndpo.judges.agreement import AgreementJudge, ConsensusJudge
from rndpo.judges.base import Judge, TrainableJudge
from rndpo.judges.calibration import JudgeCalibration, ensemble_components, ensemble_weights
from rndpo.judges.ensemble import DEFAULT_COMPONENTS, RANKING, EnsembleJudge
from rndpo.judges.learned_qc import LearnedQCJudge
from rndpo.judges.oracle import NoisyOracleJudge, OracleJudge
from rndpo.judges.uncertainty import UncertaintyJudge
from rndpo.proposals import ProposalBank
from rndpo.storage import stage_ready

__all__ = [
    "JUDGE_NAMES",
    "JUDGE_SPECS",
    "ComponentBuilder",
    "FitSource",
    "JudgeLabel",
    "JudgeSpec",
    "build_judge",
    "calibrated_kwargs",
    "calibration_judges",
    "calibration_settings",
    "judge_settings",
    "judge_spec",
    "key_settings",
    "make_judge",
]

JudgeLabel = tuple[str, str, dict[str, Any]]
"""(label, judge name, kwargs) of one configured judge (see :meth:`rndpo.config.JudgeConfig.judge_labels`)."""

ComponentBuilder = Callable[[str, str, dict[str, Any]], Judge]
"""Builds a composite judge's component from its (label, name, kwargs)."""


@dataclass(frozen=True)
class FitSource:
    """Where a trained judge comes from: ``folder``, when it holds a ready stage (see
    :func:`rndpo.storage.stage_ready`), else fitted on ``labeled_bank()`` (called only then: a bank of
    proposals for labeled images, with images and ground truth) with ``seed`` and saved into ``folder``.

    device: where a loaded judge runs (a judge fitted here keeps its default device); progress: show
    the fit's progress bar.
    """

    folder: Path
    labeled_bank: Callable[[], ProposalBank]
    seed: int
    device: str = "cpu"
    progress: bool = False


@dataclass(frozen=True)
class JudgeSpec:
    """How the registry builds the judge ``name``.

    factory: the judge's class (or a callable with its keyword arguments); seeded: takes a ``seed``;
    composite: combines component judges (its factory takes ``judges`` and ``weights``); for a judge
    trained on labeled proposals: ``load`` (folder, device=) reads a saved one, ``settings`` gives its
    constructor settings from ``[judges]`` and ``fit_steps`` its training steps.
    ``components`` (composite only): the (label, name, kwargs) it combines under a config.
    """

    name: str
    factory: Callable[..., Judge]
    seeded: bool = False
    composite: bool = False
    load: Callable[..., Judge] | None = None
    settings: Callable[[JudgeConfig], dict[str, Any]] | None = None
    fit_steps: Callable[[JudgeConfig], int] | None = None
    components: Callable[[JudgeConfig], list[JudgeLabel]] | None = None

    @property
    def trained(self) -> bool:
        """Fitted on labeled proposals (and kept in a folder) before it can score."""
        return self.load is not None

    def __post_init__(self) -> None:
        trained = (self.load, self.settings, self.fit_steps)
        if any(t is None for t in trained) and any(t is not None for t in trained):
            raise ValueError(
                f"judge {self.name!r}: load, settings and fit_steps go together (a trained judge)"
            )
        if self.composite != (self.components is not None):
            raise ValueError(f"judge {self.name!r}: a composite judge needs components, and only it")


def _qc_settings(judges: JudgeConfig) -> dict[str, Any]:
    return {
        "n_synthetic": judges.qc_synthetic,
        "rank_weight": judges.qc_rank_weight,
        "jitter": judges.qc_jitter,
        "tta": judges.qc_tta,
    }


def _qc_steps(judges: JudgeConfig) -> int:
    return judges.qc_steps


_SPECS = (
    JudgeSpec("oracle", OracleJudge),
    JudgeSpec("noisy_oracle", NoisyOracleJudge, seeded=True),
    JudgeSpec("agreement", AgreementJudge),
    JudgeSpec("consensus", ConsensusJudge),
    JudgeSpec("uncertainty", UncertaintyJudge),
    JudgeSpec(
        "learned_qc", LearnedQCJudge, load=LearnedQCJudge.load, settings=_qc_settings, fit_steps=_qc_steps
    ),
    JudgeSpec("ensemble", EnsembleJudge, composite=True, components=ensemble_components),
)

JUDGE_SPECS: Mapping[str, JudgeSpec] = {spec.name: spec for spec in _SPECS}
"""Every judge's spec by name, in the order of :data:`rndpo.config.JUDGE_NAMES`."""

# the keyword arguments a composite judge takes: its Judge objects, or the labels of the configured
# judges to build (an experiment's form, see calibrated_kwargs), their weights, and the ranking scheme
_COMPOSITE_KWARGS = ("judges", "components", "weights", "ranking")


def judge_spec(name: str) -> JudgeSpec:
    """The spec of judge ``name``; ValueError naming the valid names for an unknown one."""
    if not isinstance(name, str) or name not in JUDGE_SPECS:
        raise ValueError(f"unknown judge {name!r}; valid names: {list(JUDGE_NAMES)}")
    return JUDGE_SPECS[name]


def judge_settings(name: str, judges: JudgeConfig) -> dict[str, Any]:
    """Judge ``name``'s constructor settings from ``[judges]`` (empty for a judge that takes none)."""
    spec = judge_spec(name)
    return {} if spec.settings is None else spec.settings(judges)


def key_settings(name: str, judges: JudgeConfig) -> list[Any] | None:
    """What of ``[judges]`` belongs in judge ``name``'s cache keys beyond its label and kwargs: for a
    trained judge [fit steps, constructor settings], else None."""
    spec = judge_spec(name)
    if spec.settings is None or spec.fit_steps is None:
        return None
    return [spec.fit_steps(judges), spec.settings(judges)]


def calibration_judges(judges: JudgeConfig) -> list[JudgeLabel]:
    """The (label, name, kwargs) the validation calibration scores: every configured judge that is not
    composite, then the components of the composite ones (each label once)."""
    configured = judges.judge_labels()
    labels = [j for j in configured if not judge_spec(j[1]).composite]
    for name in dict.fromkeys(j[1] for j in configured):
        spec = judge_spec(name)
        if spec.components is not None:
            labels += spec.components(judges)
    return list(dict((j[0], j) for j in labels).values())


def calibration_settings(judges: JudgeConfig) -> list[Any]:
    """What the calibration stage's cache key holds beyond the config sections: the ranking scheme
    (:data:`rndpo.judges.ensemble.RANKING`) when ``[judges]`` names a composite judge, else nothing."""
    return [RANKING] if any(judge_spec(name).composite for name in judges.names) else []


def calibrated_kwargs(
    name: str, kwargs: dict[str, Any], judges: JudgeConfig, calibration: Mapping[str, JudgeCalibration]
) -> dict[str, Any]:
    """Judge ``name``'s kwargs for a run after the validation ``calibration`` (by label): a composite
    judge's are the labels of its components, their weights (max(validated Spearman, 0), equal when all
    are 0) and the ranking scheme; any other judge keeps ``kwargs``."""
    spec = judge_spec(name)
    if spec.components is None:
        return kwargs
    parts = [part[0] for part in spec.components(judges)]
    return {"components": parts, "weights": ensemble_weights(calibration, parts), "ranking": RANKING}


def _construct(spec: JudgeSpec, kwargs: dict[str, Any]) -> Judge:
    """spec.factory(**kwargs), with a TypeError naming the accepted arguments when they do not fit."""
    try:
        inspect.signature(spec.factory).bind(**kwargs)
    except TypeError as exc:
        params = [p for p in inspect.signature(spec.factory).parameters if p != "self"]
        raise TypeError(
            f"judge {spec.name!r} got invalid arguments {sorted(kwargs)}; it accepts {params} ({exc})"
        ) from None
    return spec.factory(**kwargs)


def _with(kwargs: dict[str, Any], name: str, extra: dict[str, Any]) -> dict[str, Any]:
    """kwargs plus extra; TypeError when both hold a key."""
    both = sorted(set(kwargs) & set(extra))
    if both:
        raise TypeError(f"judge {name!r}: {both} given both in kwargs and by the registry ({sorted(extra)})")
    return {**extra, **kwargs}


def build_judge(
    name: str,
    kwargs: Mapping[str, Any] | None = None,
    *,
    config: JudgeConfig | None = None,
    seed: int | None = None,
    fit: FitSource | None = None,
    component: ComponentBuilder | None = None,
) -> Judge:
    """The judge ``name`` (one of :data:`JUDGE_NAMES`) built with ``kwargs`` and the generic context.

    config: the ``[judges]`` section: a trained judge's settings and fit steps, a composite judge's
    components (None: each judge's own defaults). seed: given to a seeded judge (None: its default).
    fit: where a trained judge is loaded from or fitted (None: an unfitted judge). component: builds a
    composite judge's components from (label, name, kwargs) (None: :func:`build_judge` with the same
    config and seed). Judges that need none of these ignore them.

    A composite judge (``ensemble``) takes ``judges`` (Judge objects), or ``components`` (labels of the
    judges of ``config``, or judge names without one), or neither (the configured label-free judges
    with a config, :data:`rndpo.judges.ensemble.DEFAULT_COMPONENTS` without), plus ``weights`` (one per
    component; None: equal) and ``ranking`` (must be :data:`rndpo.judges.ensemble.RANKING`).
    Unknown names raise ValueError, arguments the judge does not take TypeError.
    """
    spec = judge_spec(name)
    kw = dict(kwargs or {})
    if spec.composite:
        return _build_composite(spec, kw, config, seed, component)
    if spec.seeded and seed is not None:
        kw = _with(kw, name, {"seed": seed})
    if spec.settings is not None and config is not None:
        kw = _with(kw, name, spec.settings(config))
    if fit is None or spec.load is None or spec.fit_steps is None:
        return _construct(spec, kw)
    if stage_ready(fit.folder):
        return spec.load(fit.folder, device=fit.device)
    judge = _construct(spec, kw)
    if not isinstance(judge, TrainableJudge):
        raise TypeError(
            f"judge {name!r} is registered as trained but has no fit/save: {type(judge).__name__}"
        )
    steps = spec.fit_steps(config if config is not None else JudgeConfig())
    judge.fit(fit.labeled_bank(), steps=steps, seed=fit.seed, progress=fit.progress)
    judge.save(fit.folder)
    return judge


def _build_composite(
    spec: JudgeSpec,
    kw: dict[str, Any],
    config: JudgeConfig | None,
    seed: int | None,
    component: ComponentBuilder | None,
) -> Judge:
    unknown = sorted(set(kw) - set(_COMPOSITE_KWARGS))
    if unknown:
        raise TypeError(
            f"judge {spec.name!r} got invalid arguments {sorted(kw)}; it accepts {list(_COMPOSITE_KWARGS)}"
        )
    if "judges" in kw and "components" in kw:
        raise TypeError(f"judge {spec.name!r} takes judges (Judge objects) or components (labels), not both")
    ranking = kw.get("ranking", RANKING)
    if ranking != RANKING:
        raise ValueError(f"ranking must be {RANKING!r} (the only scheme this version has), got {ranking!r}")
    if "judges" in kw:
        return _construct(spec, {"judges": kw["judges"], "weights": kw.get("weights")})
    if spec.components is None:  # __post_init__ guarantees it for a composite spec
        raise TypeError(f"judge {spec.name!r} is composite but names no components")
    known = {} if config is None else {j[0]: j for j in spec.components(config)}
    if "components" in kw:
        labels = kw["components"]
        if isinstance(labels, str) or not all(isinstance(x, str) for x in labels):
            raise TypeError(f"components must be a list of judge labels (str), got {labels!r}")
        parts = [known.get(label) or _unconfigured(spec, label, config) for label in labels]
    else:
        parts = list(known.values()) or [(n, n, {}) for n in DEFAULT_COMPONENTS]

    def build(label: str, name: str, kwargs: dict[str, Any]) -> Judge:
        return build_judge(name, kwargs, config=config, seed=seed)

    make = component or build
    return _construct(spec, {"judges": [make(*part) for part in parts], "weights": kw.get("weights")})


def _unconfigured(spec: JudgeSpec, label: str, config: JudgeConfig | None) -> JudgeLabel:
    """A component label that the config does not define: a judge name with its defaults, without a
    config; with one, an error naming the components the config defines."""
    if config is not None:
        valid = [j[0] for j in spec.components(config)] if spec.components is not None else []
        raise ValueError(
            f"components: {label!r} is no component of {spec.name!r} under this config; valid: {valid}"
        )
    if label not in JUDGE_SPECS or JUDGE_SPECS[label].composite:
        raise ValueError(f"components: unknown judge {label!r}; valid names: {list(JUDGE_NAMES)}")
    return (label, label, {})


def make_judge(name: str, **kwargs: Any) -> Judge:
    """The judge called ``name`` (one of :data:`JUDGE_NAMES`), constructed with ``kwargs``.

    ``make_judge("ensemble")`` is the default ensemble (agreement and consensus, equal weights);
    ``make_judge("ensemble", judges=[...], weights=[...])`` one of the given judges. See
    :func:`build_judge` for the context an experiment adds.
    """
    return build_judge(name, kwargs)
