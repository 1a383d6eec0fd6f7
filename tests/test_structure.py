"""The package's shape, as tools/check_structure.py checks it: no import circle, no module importing a higher
layer, no function over 80 lines."""

from __future__ import annotations

import importlib.util
from pathlib import Path

TOOL = Path(__file__).resolve().parents[1] / "tools" / "check_structure.py"


def test_no_circle_no_upward_import_no_overlong_function():
    spec = importlib.util.spec_from_file_location("check_structure", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    problems, lengths = module.check()
    assert problems == []
    assert lengths[0][0] <= module.MAX_FUNCTION_LINES
