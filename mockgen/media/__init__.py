"""Deterministic placeholder result media: indexed-colour PNG stills and tiny H.264 MP4 clips."""

from __future__ import annotations

from .common import ASPECT_RATIOS, DEFAULT_ASPECT_RATIO
from .mp4 import render_mp4, video_size
from .png import image_size, render_png

__all__ = ["ASPECT_RATIOS", "DEFAULT_ASPECT_RATIO", "image_size", "render_mp4", "render_png", "video_size"]
