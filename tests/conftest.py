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
    artifact the models read, at 48 px, built once per session for the models' tests."""
    from trees import composite_store

    return composite_store(tmp_path_factory.mktemp("models"), ("flow", "strain", "residual", "dynamic", "magnified_flow"),
                           size=48)
