"""Fixtures for the nvidia_gpu role's helper script (roles/nvidia_gpu/files/modelops_gpu.py).

The script is a standalone file the role copies to hosts, not an importable module:
the tests load it from its path."""
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[4]
SCRIPT = ROOT / "roles" / "nvidia_gpu" / "files" / "modelops_gpu.py"


@pytest.fixture(scope="session")
def gpu_script():
    """The path of modelops_gpu.py, for tests that run it as the role does."""
    return str(SCRIPT)


@pytest.fixture(scope="session")
def gpu(gpu_script):
    """modelops_gpu.py loaded as a module."""
    spec = importlib.util.spec_from_file_location("modelops_gpu", gpu_script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
