"""SmallCoder model classes and presets."""

from smallcoder.models.backbone import SmallCoderBackbone
from smallcoder.models.causal_lm import SmallCoderCausalLM
from smallcoder.models.presets import PRESETS

__all__ = ["PRESETS", "SmallCoderBackbone", "SmallCoderCausalLM"]
