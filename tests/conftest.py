import pytest


@pytest.fixture(scope="session")
def fashion():
    """Fashion-MNIST, found (make test installs the Debian package) or downloaded; a clear failure otherwise."""
    from alexnet.data.builtin import find_builtin
    find_builtin("fashion-mnist", progress=False)
    return "fashion-mnist"
