"""The wheel must contain every subpackage: an editable install hides a missing entry in pyproject."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_listed_in_pyproject():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "onnxprune").rglob("__init__.py")}
    found |= {"onnxprune.passes." + ".".join(p.parent.relative_to(ROOT / "passes").parts)
              for p in (ROOT / "passes").rglob("__init__.py") if p.parent != ROOT / "passes"}
    assert found - listed == set(), f"add to [tool.setuptools] packages: {sorted(found - listed)}"
    assert config["package-dir"]["onnxprune.passes"] == "passes"
