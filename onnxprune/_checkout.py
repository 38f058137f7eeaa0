"""``onnxprune.passes`` from a plain checkout.

The graph passes live in the top-level ``passes/`` folder (the repository layout is fixed) and are installed as
``onnxprune.passes``. An installed or editable onnxprune finds them through its own install; a plain checkout
on ``sys.path`` (``PYTHONPATH=.``, no ``pip install``) does not. This finder, placed last on ``sys.meta_path``,
answers only for ``onnxprune.passes`` and only when nothing before it did, with the ``passes/`` folder beside
this package; submodules are then found through the package's ``__path__`` as usual.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from pathlib import Path

PASSES = Path(__file__).resolve().parent.parent / "passes"


class CheckoutPassesFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: object = None, target: object = None
                  ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "onnxprune.passes" or not (PASSES / "__init__.py").is_file():
            return None
        return importlib.util.spec_from_file_location(fullname, PASSES / "__init__.py",
                                                      submodule_search_locations=[str(PASSES)])


def install() -> None:
    if not any(isinstance(f, CheckoutPassesFinder) for f in sys.meta_path):
        sys.meta_path.append(CheckoutPassesFinder())


install()
