"""Typed parameter sets of the artifacts, their defaults (from the papers) and their cache keys.

Each artifact has a frozen dataclass here. A build takes the defaults, then a TOML config file
(one table per artifact), then ``--param artifact.name=value`` options, in that order. The
parameters of an artifact, its code version and the keys of what it is computed from make its
*cache key* (:func:`cache_keys`): a stored artifact whose key differs from the build's is
recomputed, and so, through the chain, is everything computed from it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path


class ParamError(ValueError):
    """A parameter the user gave that mepipe cannot use; the message names it."""


@dataclass(frozen=True)
class FaceParams:
    """``face``: detection, landmarks, one similarity per clip, crop, eye mask (``features.face``).

    size : side S of the square crops in pixels; 224 as most of the papers. A model whose paper
        says otherwise reads its own variant (``pipeline.variants``, ``build --for``).
    colour : keep the RGB channels (crops, clips, and the artifacts defined on colour: ``residual``,
        ``dynamic``); False: gray, the BT.601 luma of the colour crop. Flow-type artifacts are
        always computed on the gray crops.
    mode : ``clip`` (one transform from the onset landmarks, head motion removed) or ``frame``.
    stabilize : remove the head's rigid motion in clip mode (see ``align_clip``).
    eye_margin : eye-mask margin in inter-ocular distances.
    eye_fill : how the eyes are hidden: ``zero`` (as the MobileViT paper shows them), ``mean``, or
        ``none``: the eyes are kept and no artifact is masked. With ``zero`` or ``mean`` the key
        frames, the residual and dynamic images are computed on eye-filled crops and the flow-type
        arrays zeroed in the mask; flow, strain, the magnified clip and apex spotting always run on
        the crops with their eyes (blinks are masked out of their results, not of their input). The
        stored clip keeps its eyes; the mask is stored beside it.
    apex : ``annotation`` (the sheet's apex; the adapter's rule where there is none, e.g. SMIC's
        middle frame) or ``spot`` (the frame of largest facial motion, ``features.apex``).
    """

    size: int = 224
    colour: bool = False
    mode: str = "clip"
    stabilize: bool = True
    eye_margin: float = 0.15
    eye_fill: str = "zero"
    apex: str = "annotation"

    def validate(self) -> None:
        _choice(self, "mode", ("clip", "frame"))
        _choice(self, "eye_fill", ("zero", "mean", "none"))
        _choice(self, "apex", ("annotation", "spot"))
        _positive(self, "size", minimum=32)
        _positive(self, "eye_margin", minimum=0.0)


@dataclass(frozen=True)
class FlowParams:
    """``flow``: TV-L1 optical flow onset -> apex (``features.flow``); OpenCV's defaults."""

    backend: str = "opencv"
    tau: float = 0.25
    lambda_: float = 0.15
    theta: float = 0.3
    n_scales: int = 5
    n_warps: int = 5
    scale_step: float = 0.8
    epsilon: float = 0.01
    inner_iterations: int = 30
    outer_iterations: int = 10
    median_filtering: int = 5
    gamma: float = 0.0

    def validate(self) -> None:
        _choice(self, "backend", ("opencv", "torch"))
        for name in ("tau", "lambda_", "theta", "epsilon"):
            _positive(self, name)
        for name in ("n_scales", "n_warps", "inner_iterations", "outer_iterations", "median_filtering"):
            _positive(self, name, minimum=1)
        if not 0 < self.scale_step < 1:
            raise ParamError(f"flow.scale_step must be in (0, 1), got {self.scale_step}")

    def kwargs(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class StrainParams:
    """``strain``: optical strain magnitude of the flow (``features.strain``)."""

    normalize: str = "none"

    def validate(self) -> None:
        _choice(self, "normalize", ("none", "minmax"))


@dataclass(frozen=True)
class ResidualParams:
    """``residual``: ARS and RRS images, Zhao et al. 2021 equations (5)-(7); N_key = 5.

    rrs_range : the range an RGB clip's RRS is stretched by: ``image``, one min and max over all
        pixels and channels, as equation (7) writes ``min(diff)`` and ``max(diff)``; or
        ``channel``, each channel by its own.
    """

    n_key: int = 5
    rrs_range: str = "image"

    def validate(self) -> None:
        _positive(self, "n_key", minimum=1)
        _choice(self, "rrs_range", ("image", "channel"))


@dataclass(frozen=True)
class DynamicParams:
    """``dynamic``: dynamic image of onset..apex (Bilen et al. 2016) by RankSVM or its approximation."""

    method: str = "rank_svm"
    normalization: str = "clip"

    def validate(self) -> None:
        _choice(self, "method", ("rank_svm", "approximate"))
        _choice(self, "normalization", ("clip", "frame", "none"))


@dataclass(frozen=True)
class MagnifyParams:
    """``magnified``: linear Eulerian video magnification (Wu et al. 2012), alpha 10 as MSMMT."""

    alpha: float = 10.0
    band_low_hz: float = 2.0
    band_high_hz: float = 25.0
    temporal_filter: str = "ideal"
    order: int = 1
    cutoff_wavelength: float = 16.0
    attenuation: str = "linear"

    def validate(self) -> None:
        _positive(self, "alpha", minimum=0.0)
        _choice(self, "temporal_filter", ("ideal", "butterworth"))
        _choice(self, "attenuation", ("linear", "zero"))
        _positive(self, "cutoff_wavelength")
        if not 0 < self.band_low_hz < self.band_high_hz:
            raise ParamError(f"magnified: need 0 < band_low_hz < band_high_hz, got {self.band_low_hz}, {self.band_high_hz}")


@dataclass(frozen=True)
class MagnifiedFlowParams:
    """``magnified_flow``: flow (with the ``flow`` parameters) and strain of the magnified onset -> apex."""

    def validate(self) -> None:
        pass


PARAM_TYPES: dict[str, type] = {
    "face": FaceParams,
    "flow": FlowParams,
    "strain": StrainParams,
    "residual": ResidualParams,
    "dynamic": DynamicParams,
    "magnified": MagnifyParams,
    "magnified_flow": MagnifiedFlowParams,
}

#: Bumped when an artifact's code changes what it computes: stored results then stop matching.
CODE_VERSIONS: dict[str, int] = {
    **{name: 1 for name in PARAM_TYPES},
    # 2: one alignment estimated at 224 px and scaled to the crop size; gray crops are the luma of
    # the colour crop, so that the variants of a clip are the same face
    "face": 2,
    # 2: magnified from the crops with their eyes (was: from the eye-filled crops)
    "magnified": 2,
}


def resolve_params(config: Path | None = None, overrides: Iterable[str] = ()) -> dict[str, object]:
    """Every artifact's parameters: defaults, then the TOML ``config``, then ``name.field=value`` overrides."""
    values: dict[str, dict[str, object]] = {name: {} for name in PARAM_TYPES}
    if config is not None:
        config = Path(config)
        try:
            table = tomllib.loads(config.read_text())
        except FileNotFoundError:
            raise ParamError(f"config file {config} does not exist") from None
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
            raise ParamError(f"config file {config}: not readable TOML ({error})") from None
        for artifact, entries in table.items():
            _check_artifact(artifact, f"config file {config}")
            if not isinstance(entries, Mapping):
                raise ParamError(f"config file {config}: [{artifact}] must be a table of parameters")
            for name, value in entries.items():
                values[artifact][name] = _convert(artifact, name, value, f"config file {config}")
    for text in overrides:
        key, sep, raw = text.partition("=")
        artifact, dot, name = key.strip().partition(".")
        if not sep or not dot:
            raise ParamError(f"--param {text!r}: expected ARTIFACT.NAME=VALUE, e.g. flow.lambda_=0.1")
        _check_artifact(artifact, f"--param {text!r}")
        values[artifact][name] = _convert(artifact, name, raw.strip(), f"--param {text!r}")
    params = {name: PARAM_TYPES[name](**values[name]) for name in PARAM_TYPES}
    for item in params.values():
        item.validate()
    return params


def cache_keys(params: Mapping[str, object], depends: Mapping[str, tuple[str, ...]]) -> dict[str, str]:
    """The cache key of every artifact: a hash of its parameters, code version and upstream keys."""
    keys: dict[str, str] = {}

    def key(name: str) -> str:
        if name not in keys:
            keys[name] = artifact_key(name, dataclasses.asdict(params[name]), {dep: key(dep) for dep in depends[name]})
        return keys[name]

    for name in params:
        key(name)
    return keys


def artifact_key(name: str, params: Mapping[str, object], upstream: Mapping[str, str]) -> str:
    """The cache key of artifact ``name`` computed with ``params`` (a dict) from inputs whose keys
    are ``upstream``: 16 hex digits of a SHA-256 over them and the artifact's code version. The
    store recomputes it from its records to tell a stale artifact (``store.stale_artifacts``)."""
    record = {"artifact": name, "version": CODE_VERSIONS[name], "params": dict(params), "upstream": dict(upstream)}
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:16]


def as_dict(params: object) -> dict:
    return dataclasses.asdict(params)


def _check_artifact(artifact: str, where: str) -> None:
    if artifact not in PARAM_TYPES:
        raise ParamError(f"{where}: unknown artifact {artifact!r}; artifacts: {', '.join(PARAM_TYPES)}")


def _convert(artifact: str, name: str, value, where: str):
    kinds = {f.name: f.type for f in fields(PARAM_TYPES[artifact])}
    if name not in kinds:
        known = ", ".join(kinds) or "none"
        raise ParamError(f"{where}: {artifact} has no parameter {name!r}; its parameters: {known}")
    # field types are strings under postponed evaluation of annotations
    kind = {"int": int, "float": float, "bool": bool, "str": str}[kinds[name]]
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("true", "1", "yes", "on"):
                return True
            if text in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if kind is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if kind is float:
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise ParamError(f"{where}: {artifact}.{name} must be {kind.__name__}, got {value!r}") from None


def _choice(params, name: str, choices: tuple[str, ...]) -> None:
    value = getattr(params, name)
    if value not in choices:
        raise ParamError(f"{_artifact_of(params)}.{name} must be one of {', '.join(choices)}; got {value!r}")


def _positive(params, name: str, minimum: float | None = None) -> None:
    value = getattr(params, name)
    if minimum is None:
        if not value > 0:
            raise ParamError(f"{_artifact_of(params)}.{name} must be > 0, got {value}")
    elif not value >= minimum:
        raise ParamError(f"{_artifact_of(params)}.{name} must be >= {minimum}, got {value}")


def _artifact_of(params) -> str:
    return next(name for name, kind in PARAM_TYPES.items() if isinstance(params, kind))

