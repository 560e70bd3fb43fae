"""The fixtures the serve tests share: a quickly trained checkpoint, and the predictor the app runs on it."""
import pytest

from serve_fixtures import quick_checkpoint


@pytest.fixture(scope="module")
def checkpoint(fashion, tmp_path_factory):
    return quick_checkpoint(tmp_path_factory)


@pytest.fixture(scope="module")
def predictor(checkpoint):
    from alexnet.serve.app import Settings, load_predictor
    return load_predictor(Settings(checkpoint))
