import sys

from onnxprune.cli.main import main

sys.exit(main())
