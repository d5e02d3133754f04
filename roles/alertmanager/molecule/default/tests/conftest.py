"""Loads the fixtures every scenario shares (molecule/shared/testinfra_fixtures.py)."""
import sys
from pathlib import Path

_HERE = Path(__file__).resolve()
# molecule/shared for the fixtures, the role's molecule/ for its shared checks.
sys.path[:0] = [str(_HERE.parents[5] / "molecule" / "shared"), str(_HERE.parents[2])]
from testinfra_fixtures import *  # noqa: E402,F401,F403
