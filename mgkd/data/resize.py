"""Resizing uint8 image tensors once, at load time (area-weighted, as an image library shrinks)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

_CHUNK = 512  # images resized at a time: bounds the float copy of a large set


def resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    """``images`` (N, C, H, W) uint8 resized to ``size`` x ``size`` (bilinear with antialiasing,
    rounded back to uint8); returned unchanged when already that size."""
    if tuple(images.shape[-2:]) == (size, size):
        return images.contiguous()
    out = torch.empty((images.shape[0], images.shape[1], size, size), dtype=torch.uint8)
    for start in range(0, images.shape[0], _CHUNK):
        chunk = images[start:start + _CHUNK].float()
        resized = F.interpolate(chunk, size=(size, size), mode="bilinear", align_corners=False,
                                antialias=True)
        out[start:start + len(chunk)] = resized.round_().clamp_(0, 255).to(torch.uint8)
    return out
