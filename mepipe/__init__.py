"""mepipe: reproducible, parallel preprocessing and features for facial micro-expression recognition."""

__version__ = "0.1.0"

__all__ = ["__version__", "load"]


def load(store, dataset: str, artifacts=(), protocol: str | None = None, *, model: str | None = None, variant=None):
    """The built artifacts of ``dataset`` (see :func:`mepipe.pipeline.load.load`).

    ``model="cropnet"``: exactly what that model reads (its declared artifacts, in its own input
    variant: ``docs/models/inputs.md``); ``artifacts`` and ``variant`` are then left out.
    """
    # imported here: ``import mepipe`` stays free of zarr, the pipeline and (for ``model``) torch
    from mepipe.pipeline.load import LoadError, load as load_store

    if model is None:
        return load_store(store, dataset, artifacts, protocol, variant=variant)
    if artifacts or variant is not None:
        raise LoadError("mepipe.load: give model= alone, or artifacts= and variant=, not both")
    from mepipe.models.recipes import model_inputs

    spec = model_inputs(model)
    macro = dataset in spec.macro
    return load_store(store, dataset, spec.macro_artifacts if macro else spec.artifacts, protocol, variant=spec.variant,
                      for_model=model)
