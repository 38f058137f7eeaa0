"""Read-only channel dependency analysis: which channels of which layers must be pruned together."""

from onnxprune.channels.analysis import ChannelAnalysis, ChannelGroup, analyze

__all__ = ["ChannelAnalysis", "ChannelGroup", "analyze"]
