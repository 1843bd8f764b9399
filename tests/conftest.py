import pytest
import torch


@pytest.fixture(autouse=True)
def _deterministic_threads():
    # Two threads like CI; results must not depend on the global RNG, but keep it fixed
    # so a failure reproduces.
    torch.manual_seed(1234)
    yield
