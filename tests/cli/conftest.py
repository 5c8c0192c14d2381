"""Shared by the command tests: one tiny model trained through ``deepshrink train`` for the session
(lenet300, 1 epoch on a 256-image npz file; see ``train_cli_model`` in tests/conftest.py)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def trained(tmp_path_factory, train_cli_model):
    """``(root, data_spec, model_file)``; tests write their outputs elsewhere or under new names."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train_cli_model(tmp_path_factory.mktemp("cli"), "x.safetensors")
    finally:
        torch.set_num_threads(before)
