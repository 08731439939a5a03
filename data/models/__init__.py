"""Model code of our own, registered with timm by importing it: ``import data.models`` and
``timm.create_model("g2net_1d_small", ...)`` works like any timm model (docs/training.md)."""

from data.models import g2net1d  # noqa: F401  (registers the 1D CNNs with timm)
