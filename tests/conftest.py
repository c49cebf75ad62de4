from pathlib import Path

import pytest

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference"


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    if not REFERENCE.is_dir():
        pytest.skip(f"reference tables not found at {REFERENCE} (../shared beside the repository)")
    return REFERENCE


@pytest.fixture(scope="session")
def demo_set(tmp_path_factory):
    """The default demo set (casme2 layout, 6 subjects x 6 clips, seed 0), made once per session."""
    from mepipe.synth.generate import SynthOptions, synthesize

    root = tmp_path_factory.mktemp("demo") / "casme2"
    summary = synthesize(SynthOptions(layout="casme2", out=root, workers=2))
    return summary


@pytest.fixture(scope="session")
def model_store(tmp_path_factory):
    """A tiny synthetic composite (casme2, samm, smic of ``trees.COMPOSITE_CODING``) with every
    artifact the models read, at 48 px, and a 3 x 3 CK+ (faces: MobileViT's macro-expression
    transfer), built once per session for the models' and the training tests."""
    from trees import composite_store

    return composite_store(tmp_path_factory.mktemp("models"), ("flow", "strain", "residual", "dynamic", "magnified_flow"),
                           size=48, macro=True)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> Path:
    """A synthetic CASME II tree: 2 subjects x 3 clips (the build tests copy it before changing it)."""
    from mepipe.synth.generate import SynthOptions, synthesize

    root = tmp_path_factory.mktemp("tiny") / "casme2"
    synthesize(SynthOptions(layout="casme2", out=root, subjects=2, clips_per_subject=3, workers=1))
    return root


@pytest.fixture(scope="session")
def reference_store(tiny, tmp_path_factory) -> Path:
    """An uninterrupted local build of ``tiny`` at 64 px: what the other builds must equal."""
    from stores import SMALL

    from mepipe.pipeline.build import BuildOptions, build

    store = tmp_path_factory.mktemp("reference") / "store.zarr"
    build(BuildOptions("casme2", root=tiny, store=store, scheduler="threads", workers=2, params=SMALL))
    return store


@pytest.fixture(scope="session")
def variant_build(tiny, tmp_path_factory):
    """``mepipe build --for all`` of the tiny CASME II tree (a lighter TV-L1): (store, summary)."""
    from stores import FAST_FLOW

    from mepipe.models.recipes import build_targets
    from mepipe.pipeline.build import BuildOptions, build

    store = tmp_path_factory.mktemp("variants") / "store.zarr"
    summary = build(BuildOptions("casme2", root=tiny, store=store, scheduler="threads", workers=2, params=FAST_FLOW,
                                 targets=build_targets(["all"], "casme2")))
    return store, summary
