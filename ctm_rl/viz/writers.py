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

    A shared palette (built from a few representative frames, see :class:`PaletteMapper`) avoids the
    flicker of per-frame palettes and is faster: every frame is only mapped onto it, without dithering
    (dithering turns flat panels into noise and bloats the file).  Pillow stores each frame as the rectangle that changed since the previous
    one, so the static parts of the figure cost nothing.
    """
    path = Path(path)
    to_palette = PaletteMapper(palette_samples)
    images = (to_palette(frame) for frame in frames)
    first = next(images)
    # GIF delays are in hundredths of a second: round to 10 ms so the requested speed is kept.
    duration = max(20, round(100.0 / fps) * 10)
    first.save(path, format="GIF", save_all=True, append_images=images, duration=duration, loop=0)
    return path


class PaletteMapper:
    """Maps rgb frames onto one shared 256-colour palette, each colour to its exact nearest entry.

    The palette keeps the ``exact`` most frequent colours of the sample frames exactly -- white background,
    text, axes, the env's flat colours -- and fills the rest with a median cut of all other pixels (colour
    maps, anti-aliasing).  Pillow's own palette conversion looks colours up at reduced precision, which
    turned white into light grey and CartPole's thin tan pole red; here every colour seen is matched
    exactly once (cached in a table over all 2^24 colours), so a frame costs a few array look-ups.
    """

    def __init__(self, samples: Sequence[np.ndarray], exact: int = 128):
        packed = np.concatenate([_pack(np.asarray(s)).ravel() for s in samples])
        colours, counts = np.unique(packed, return_counts=True)
        keep = colours[np.argsort(-counts, kind="stable")[: min(exact, 256)]]
        entries = _unpack(keep)
        rest = _unpack(packed[~np.isin(packed, keep)])
        if len(colours) > len(keep) and len(rest):
            cut = Image.fromarray(rest.reshape(1, -1, 3).astype(np.uint8)).quantize(
                colors=256 - len(entries), method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
            extra = np.asarray(cut.getpalette()[: 3 * (256 - len(entries))], dtype=np.int64).reshape(-1, 3)
            entries = np.concatenate([entries, extra])
        self.entries = entries.astype(np.int64)
        self.flat_palette = entries.astype(np.uint8).ravel().tolist()
        self.table = np.zeros(1 << 24, dtype=np.uint8)
        self.known = np.zeros(1 << 24, dtype=bool)

    def __call__(self, frame: np.ndarray) -> Image.Image:
        """The frame as a "P" image on the shared palette."""
        packed = _pack(frame)
        new = np.unique(packed[~self.known[packed]])
        if len(new):
            distances = ((_unpack(new)[:, None, :] - self.entries[None]) ** 2).sum(-1)
            self.table[new] = distances.argmin(axis=1)
            self.known[new] = True
        indices = np.ascontiguousarray(self.table[packed])
        image = Image.frombytes("P", (indices.shape[1], indices.shape[0]), indices.tobytes())
        image.putpalette(self.flat_palette)
        return image


def _pack(frame: np.ndarray) -> np.ndarray:
    """``(..., 3)`` uint8 colours as single 24-bit integers."""
    rgb = frame[..., :3].astype(np.uint32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def _unpack(packed: np.ndarray) -> np.ndarray:
    """24-bit integers back to ``(N, 3)`` int64 colours."""
    packed = packed.astype(np.int64)
    return np.stack([(packed >> 16) & 255, (packed >> 8) & 255, packed & 255], axis=-1)


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
