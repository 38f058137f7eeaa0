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


def test_a_plain_checkout_imports_the_passes_without_an_install(tmp_path):
    """Only the two folders of a checkout on sys.path, the editable install's finder removed: onnxprune.passes
    still imports (from passes/ beside onnxprune/)."""
    import shutil
    import subprocess
    import sys

    for folder in ("onnxprune", "passes"):
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    code = (
        "import sys\n"
        "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in getattr(f, '__module__', '')\n"
        "                    and 'editable' not in getattr(f, '__name__', '')]\n"
        f"sys.path.insert(0, {str(tmp_path)!r})\n"
        "import onnxprune.passes, onnxprune.passes.fold_batchnorm as fb\n"
        "print(onnxprune.__file__, fb.__file__)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    package, passes = proc.stdout.split()
    assert package.startswith(str(tmp_path)) and passes == str(tmp_path / "passes" / "fold_batchnorm.py")
