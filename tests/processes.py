"""Child processes that a test interrupts: SIGINT is reset to its default in the child, so Python turns it into
KeyboardInterrupt there even when the test run itself was started in the background (a non-interactive shell
starts background jobs with SIGINT ignored, and children inherit that: the interrupt would be lost)."""

from __future__ import annotations

import signal


def _sigint_default() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


#: keyword arguments for subprocess.run / Popen
INTERRUPTIBLE = {"preexec_fn": _sigint_default}
