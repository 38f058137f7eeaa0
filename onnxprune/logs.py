"""Scoped changes to the logging of libraries onnxprune calls: never a process-wide side effect.

ONNX Runtime's Python tools log through the root logger (quantization) or named loggers (``ort_format_model``),
chattily; onnxprune lowers them only inside the call and puts back the level (and handlers) it found.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator


@contextlib.contextmanager
def logger_level(level: int, *names: str) -> Iterator[None]:
    """Set the loggers ``names`` ("" or none: the root logger) to ``level`` inside the block; restore after."""
    loggers = [logging.getLogger(n or None) for n in (names or ("",))]
    saved = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(level)
    try:
        yield
    finally:
        for lg, old in zip(loggers, saved, strict=True):
            lg.setLevel(old)


@contextlib.contextmanager
def captured_logger(name: str, stream: object, level: int = logging.INFO) -> Iterator[logging.Logger]:
    """Logger ``name`` writing only to ``stream`` (not propagated) inside the block; its handlers, level and
    propagation restored after."""
    logger = logging.getLogger(name)
    saved = (logger.handlers[:], logger.level, logger.propagate)
    logger.handlers[:] = [logging.StreamHandler(stream)]   # type: ignore[arg-type]
    logger.setLevel(level)
    logger.propagate = False
    try:
        yield logger
    finally:
        logger.handlers[:], logger.level, logger.propagate = saved[0], saved[1], saved[2]
