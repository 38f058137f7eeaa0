"""Per-op channel rules; importing this package registers them all."""

from onnxprune.channels.rules import elementwise, layers, structure  # noqa: F401
from onnxprune.channels.rules.base import RULES, OpRule, register, rule_for

__all__ = ["RULES", "OpRule", "register", "rule_for"]
