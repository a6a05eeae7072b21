"""Encode animation frames as GIF (Pillow, always available) or MP4 (needs ``imageio-ffmpeg``)."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

FORMATS = ("gif", "mp4")


def check_format(fmt: str) -> None:
    """Fail before any drawing if ``fmt`` is unknown or its encoder is missing."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    if fmt == "mp4" and importlib.util.find_spec("imageio_ffmpeg") is None:
        raise RuntimeError(
            "mp4 output needs the ffmpeg plugin of imageio: `pip install imageio-ffmpeg` "
            "(or use fmt='gif', which needs nothing extra)"
        )


def write_gif(frames: Iterable[np.ndarray], path: str | os.PathLike, fps: float,
              palette_samples: Sequence[np.ndarray]) -> Path:
    """Write frames as a looping GIF with one shared 256-colour palette.

    A shared palette (built from a few representative frames) avoids the flicker of per-frame palettes and
    is faster: every frame is only mapped onto it, without dithering (dithering turns flat panels into
    noise and bloats the file).  Pillow stores each frame as the rectangle that changed since the previous
    one, so the static parts of the figure cost nothing.
    """
    path = Path(path)
    palette = Image.fromarray(np.concatenate(list(palette_samples), axis=0)).quantize(
        colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
    )
    images = (Image.fromarray(frame).quantize(palette=palette, dither=Image.Dither.NONE) for frame in frames)
    first = next(images)
    # GIF delays are in hundredths of a second: round to 10 ms so the requested speed is kept.
    duration = max(20, round(100.0 / fps) * 10)
    first.save(path, format="GIF", save_all=True, append_images=images, duration=duration, loop=0)
    return path


def write_mp4(frames: Iterable[np.ndarray], path: str | os.PathLike, fps: float) -> Path:
    """Write frames as H.264 MP4 through imageio's ffmpeg plugin, streaming (no frame list in memory)."""
    check_format("mp4")
    import imageio.v2 as imageio

    path = Path(path)
    writer = imageio.get_writer(path, format="FFMPEG", mode="I", fps=fps, codec="libx264",
                                pixelformat="yuv420p", quality=7, macro_block_size=16)
    try:
        for frame in frames:
            writer.append_data(frame)
    finally:
        writer.close()
    return path
