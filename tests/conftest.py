import logging
import os
import warnings

import pytest

# torch's exporter logs a line per missing optional package (torchvision); keep test output readable.
logging.getLogger("torch.onnx").setLevel(logging.ERROR)
os.environ.setdefault("TORCH_LOGS", "-all")
warnings.filterwarnings("ignore", category=DeprecationWarning)

from models.architectures import ZOO  # noqa: E402
from models.export_zoo import FORMS  # noqa: E402

ZOO_CASES = [(m, f) for m in ZOO for f in FORMS]


@pytest.fixture
def zoo_path():
    from models.zoo_cache import zoo_model

    return zoo_model
