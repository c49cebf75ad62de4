"""How each paper trains its model: one recipe per paper, found by name.

A recipe (:class:`~mepipe.models.recipes.base.Recipe`) turns the loaded artifacts into the
network's input tensor, optionally prepares something once per seed (MobileViT's macro-expression
transfer), and trains and tests one LOSO fold. The LOSO runner (:mod:`mepipe.models.loso`) owns
the folds, seeds, metrics and the run directory; a recipe only ever sees one fold's training and
test samples.

Options are frozen dataclasses. ``mepipe train -s name=value`` overrides them
(:func:`apply_settings`); tuples are written comma-separated (``-s grid_lr=0.007,0.001``).
Each recipe lives in its own module, imported only when its model is asked for.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Sequence

from mepipe.models.recipes.base import FoldData, FoldOutput, OptionError, Recipe, RunContext

__all__ = ["RECIPES", "FoldData", "FoldOutput", "OptionError", "Recipe", "RunContext", "apply_settings",
           "build_targets", "get_recipe", "model_inputs", "options_dict"]

#: Model name -> "module:class" of its recipe.
RECIPES: dict[str, str] = {
    "ststnet": "mepipe.models.recipes.ststnet:STSTNetRecipe",
    "mobilevit": "mepipe.models.recipes.mobilevit:MobileViTRecipe",
    "cropnet": "mepipe.models.recipes.cropnet:CropNetRecipe",
    "cva": "mepipe.models.recipes.cva:CVARecipe",
    "msmmt": "mepipe.models.recipes.msmmt:MSMMTRecipe",
    "mfvan": "mepipe.models.recipes.mfvan:MFVANRecipe",
}


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise OptionError(f"unknown model {name!r}; models: {', '.join(RECIPES)}")
    module, _, cls = RECIPES[name].partition(":")
    return getattr(importlib.import_module(module), cls)()


def model_inputs(name: str):
    """The :class:`~mepipe.pipeline.variants.ModelInputs` model ``name``'s recipe declares."""
    spec = get_recipe(name).inputs_spec
    if spec is None:
        raise OptionError(f"model {name!r} declares no inputs")
    return spec


def build_targets(names: Sequence[str], adapter: str) -> tuple:
    """What ``mepipe build --for NAMES`` makes for a dataset of ``adapter``: one
    :class:`~mepipe.pipeline.variants.Target` per model that reads it (``all``: every model, and
    the variant of a build without ``--for``). A model that does not read the dataset (CropNet on
    CK+) is an error when named, skipped under ``all``."""
    from mepipe.pipeline.artifacts import DEFAULT_ARTIFACTS, MICRO
    from mepipe.pipeline.load import ARRAY_ARTIFACT, RAGGED_ARTIFACT
    from mepipe.pipeline.variants import Target

    wanted = list(dict.fromkeys(name.strip() for name in names if name.strip()))
    if not wanted:
        raise OptionError(f"--for names no model; models: {', '.join(RECIPES)}, or all")
    everything = "all" in wanted
    if everything:
        wanted = [*RECIPES]
    unknown = [name for name in wanted if name not in RECIPES]
    if unknown:
        raise OptionError(f"--for: unknown model {unknown[0]!r}; models: {', '.join(RECIPES)}, or all")
    micro = adapter in MICRO  # the micro-expression sets, a manifest's included
    targets = [Target(None, None, ())] if everything else []
    for name in wanted:
        spec = model_inputs(name)
        if micro:
            loadable = spec.artifacts
        elif adapter in spec.macro:
            loadable = spec.macro_artifacts
        else:
            if everything:
                continue
            readers = [other for other in RECIPES if adapter in model_inputs(other).macro]
            raise OptionError(f"--for {name}: {name} does not read {adapter}"
                              + (f"; the models that do: {', '.join(readers)}" if readers else "; no model reads it"))
        produced = tuple(dict.fromkeys(ARRAY_ARTIFACT.get(item) or RAGGED_ARTIFACT[item] for item in loadable))
        applicable = DEFAULT_ARTIFACTS[adapter]
        produced = tuple(item for item in produced if item in applicable)
        if produced:
            targets.append(Target(spec.variant, produced, (name,)))
    return tuple(targets)


def apply_settings(options, settings: Sequence[str]):
    """``options`` with ``name=value`` settings applied, each converted to the field's type."""
    kinds = {f.name: f for f in dataclasses.fields(options)}
    changes = {}
    for text in settings:
        name, sep, raw = text.partition("=")
        name = name.strip()
        if not sep:
            raise OptionError(f"setting {text!r}: expected NAME=VALUE, e.g. epochs=10")
        if name not in kinds:
            raise OptionError(f"setting {text!r}: no option {name!r}; options: {', '.join(kinds)}")
        default = getattr(options, name)
        changes[name] = _convert(name, raw.strip(), default)
    try:
        return dataclasses.replace(options, **changes)
    except ValueError as error:
        raise OptionError(str(error)) from None


def _convert(name: str, raw: str, default):
    try:
        if isinstance(default, bool):
            lowered = raw.lower()
            if lowered in ("true", "1", "yes", "on"):
                return True
            if lowered in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if isinstance(default, tuple):
            kind = type(default[0]) if default else str
            return tuple(kind(part.strip()) for part in raw.split(",") if part.strip())
        return type(default)(raw)
    except ValueError:
        raise OptionError(f"setting {name}={raw!r}: expected {type(default).__name__} like {default!r}") from None


def options_dict(options) -> dict:
    return {key: list(value) if isinstance(value, tuple) else value for key, value in dataclasses.asdict(options).items()}
