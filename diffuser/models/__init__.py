"""Networks: the temporal UNet denoiser and the value function."""

from diffuser.models.temporal_unet import TemporalUnet
from diffuser.models.value_unet import ValueFunction

__all__ = ["TemporalUnet", "ValueFunction"]
