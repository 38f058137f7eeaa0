import logging
import os
import warnings

import pytest

# torch's exporter logs a line per missing optional package (torchvision); keep test output readable.
logging.getLogger("torch.onnx").setLevel(logging.ERROR)
os.environ.setdefault("TORCH_LOGS", "-all")
warnings.filterwarnings("ignore", category=DeprecationWarning)

from models.architectures import ZOO  # noqa: E402

#: every architecture in the exporters' own forms; the quirk forms (fixed batch, dynamo defaults with external
#: data, Identity-aliased parameters, untyped outputs) on one model per family (benchmarks/bench_exports.py runs
#: the whole matrix)
CORE_FORMS = ("legacy", "legacy_bn", "dynamo", "paddle")
QUIRK_FORMS = ("fixed", "dynamo_default", "identity", "noshape")
QUIRK_FORM_MODELS = ("resnet18", "mobilenet_v3_se", "shufflenet_v2", "convnext", "crnn")
ZOO_CASES = [(m, f) for m in ZOO for f in CORE_FORMS] + [(m, f) for m in QUIRK_FORM_MODELS for f in QUIRK_FORMS]


def pytest_collection_modifyitems(config, items):
    """Tests marked ``long`` first: under ``-n 2 --dist worksteal`` they then overlap the many short ones, where
    collected in file order the last of them ran alone on one worker for a minute while the other idled."""
    items.sort(key=lambda item: item.get_closest_marker("long") is None)


@pytest.fixture
def zoo_path():
    from models.zoo_cache import zoo_model

    return zoo_model
