"""Networks: the temporal UNet denoiser (the paper's), the transformer denoiser (an option) and the value function."""

from diffuser.models.temporal_transformer import TemporalTransformer
from diffuser.models.temporal_unet import TemporalUnet
from diffuser.models.value_unet import ValueFunction

__all__ = ["TemporalTransformer", "TemporalUnet", "ValueFunction"]
