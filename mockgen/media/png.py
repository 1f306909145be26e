"""PNG stills: a deterministic, prompt-dependent indexed-colour card per aspect ratio."""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Callable

from .common import ASPECT_RATIOS, GLYPH_H, GLYPH_W, RGB, Theme, mix, prompt_digest, ratio_of, sanitize, text_masks


def image_size(aspect_ratio: str | None) -> tuple[int, int]:
    """Pixel (width, height) of a generated image; None means the default ratio."""
    return ASPECT_RATIOS[ratio_of(aspect_ratio)]


def _wrap(text: str, width: int) -> list[str]:
    lines: list[str] = []
    line = ""
    for word in text.split(" "):
        while len(word) > width:
            if line:
                lines.append(line)
                line = ""
            lines.append(word[:width])
            word = word[width:]
        if not line:
            line = word
        elif len(line) + 1 + len(word) <= width:
            line += " " + word
        else:
            lines.append(line)
            line = word
    if line:
        lines.append(line)
    return lines or [""]


_PING_PONG = (0, 1, 2, 3, 4, 5, 6, 7, 6, 5, 4, 3, 2, 1)
# Palette layout: 0-7 gradient, 8-15 glass (panel), 16-23 shadow, then solid colours.
_GLASS = bytes((i + 8 if i < 8 else i) for i in range(256))
_SHADOW = bytes((i + 16 if i < 8 else i) for i in range(256))
_INK, _ACCENT, _ACCENT2, _BORDER = 24, 25, 26, 27

_Rows = list[bytes]


def _pattern_bands(w: int, h: int, d: bytes) -> _Rows:
    band = max(8, h // (9 + d[4] % 9))
    solid = [bytes([i]) * w for i in range(8)]
    return [solid[_PING_PONG[(y // band) % 14]] for y in range(h)]


def _pattern_checker(w: int, h: int, d: bytes) -> _Rows:
    tile = max(16, w // (6 + d[4] % 9))
    reps = w // (2 * tile) + 2
    rows: _Rows = []
    cache: dict[int, bytes] = {}
    for y in range(h):
        j = y // tile
        row = cache.get(j)
        if row is None:
            a = bytes([_PING_PONG[j % 14]]) * tile
            b = bytes([(_PING_PONG[j % 14] + 4) % 8]) * tile
            row = ((a + b) if j % 2 == 0 else (b + a)) * reps
            row = row[:w]
            cache[j] = row
        rows.append(row)
    return rows


def _pattern_stripes(w: int, h: int, d: bytes) -> _Rows:
    stripe = max(24, w // (8 + d[4] % 10))
    unit = b"".join(bytes([c]) * stripe for c in _PING_PONG)
    period = len(unit)
    long = unit * (w // period + 2)
    step = 1 if d[6] % 2 else period - 1
    # Rows come in identical pairs: cheaper to compress, and still a 45 degree slope.
    offsets = [(y // 2 * 2 * step) % period for y in range(h)]
    return [long[o : o + w] for o in offsets]


def _pattern_rings(w: int, h: int, d: bytes) -> _Rows:
    ring = max(40, min(w, h) // (5 + d[4] % 6))
    cx = w * (25 + d[6] % 51) // 100
    cy = h * (25 + d[7] % 51) // 100
    half_len = max(cx + 1, w - cx)
    count = (half_len + h) // ring + 2
    colours = [bytes([_PING_PONG[k % 14]]) for k in range(count)]
    radii2 = [(k * ring) ** 2 for k in range(1, count + 1)]
    isqrt = math.isqrt
    cache: dict[int, bytes] = {}
    rows: _Rows = []
    for y in range(h):
        dy = abs(y - cy) // 2 * 2  # identical pairs of rows
        row = cache.get(dy)
        if row is None:
            # Ring k covers horizontal offsets i with k*ring <= sqrt(i*i + dy*dy) < (k+1)*ring.
            k0 = dy // ring
            dy2 = dy * dy
            parts: list[bytes] = []
            start = 0
            for k, r2 in enumerate(radii2[k0:], k0):
                end = isqrt(r2 - dy2 - 1) + 1
                if end >= half_len:
                    parts.append(colours[k] * (half_len - start))
                    break
                parts.append(colours[k] * (end - start))
                start = end
            half = b"".join(parts)
            row = cache[dy] = half[cx:0:-1] + half[: w - cx]
        rows.append(row)
    return rows


def _pattern_diamonds(w: int, h: int, d: bytes) -> _Rows:
    ring = max(40, min(w, h) // (5 + d[4] % 6))
    cx = w * (25 + d[6] % 51) // 100
    cy = h * (25 + d[7] % 51) // 100
    half_len = max(cx + 1, w - cx)
    # With the L1 distance, the half row at vertical offset dy is a slice of one ramp.
    ramp = b"".join(bytes([_PING_PONG[k % 14]]) * ring for k in range((half_len + h) // ring + 2))
    rows: _Rows = []
    for y in range(h):
        dy = abs(y - cy) // 2 * 2
        half = ramp[dy : dy + half_len]
        rows.append(half[cx:0:-1] + half[: w - cx])
    return rows


_PATTERNS: tuple[Callable[[int, int, bytes], _Rows], ...] = (
    _pattern_bands,
    _pattern_checker,
    _pattern_stripes,
    _pattern_rings,
    _pattern_diamonds,
)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_palette(theme: Theme) -> bytes:
    glass_base = (14, 14, 20)
    colours: list[RGB] = list(theme.gradient)
    colours += [mix(c, glass_base, 0.84) for c in theme.gradient]
    colours += [mix(c, (0, 0, 0), 0.50) for c in theme.gradient]
    colours += [theme.ink, theme.accent, theme.accent2, mix(theme.accent, (255, 255, 255), 0.25)]
    return bytes(v for c in colours for v in c)


def _layout_prompt(text: str, avail_w: int, avail_h: int) -> tuple[list[str], int]:
    best: tuple[int, int, list[str]] | None = None
    for width in range(6, 41):
        lines = _wrap(text, width)
        if len(lines) > 4:
            continue
        longest = max(len(line) for line in lines)
        scale = min(avail_w // max(1, longest * GLYPH_W), avail_h // (len(lines) * 10), 12)
        key = (scale, -len(lines))
        if best is None or key > (best[0], best[1]):
            best = (scale, -len(lines), lines)
    assert best is not None
    return best[2], max(2, best[0])


def render_png(prompt: str, aspect_ratio: str | None) -> bytes:
    """A deterministic, prompt-dependent placeholder PNG of ``image_size(aspect_ratio)`` pixels."""
    w, h = image_size(aspect_ratio)
    d = prompt_digest(prompt)
    theme = Theme(d)
    rows = _PATTERNS[d[3] % len(_PATTERNS)](w, h, d)

    # Card text: a small header, the prompt (wrapped, large) and a small footer with the seed.
    body = sanitize(prompt, 40) or "(EMPTY PROMPT)"
    lines, scale = _layout_prompt(body, w * 80 // 100, h * 45 // 100)
    header = "MOCKGEN PREVIEW"
    footer = f"SEED {d[:4].hex().upper()} - {w}X{h}"
    small = max(2, min(round(scale / 2.6), w * 80 // 100 // (len(footer) * GLYPH_W)))
    items: list[tuple[str, int, int]] = [(header, small, _ACCENT)]
    items += [(line, scale, _INK) for line in lines]
    items.append((footer, small, _ACCENT2))
    gaps = [small * 6] + [scale * 3] * (len(lines) - 1) + [scale * 4]
    text_w = max(len(t) * GLYPH_W * s - s for t, s, _ in items)
    text_h = sum(GLYPH_H * s for _, s, _ in items) + sum(gaps)
    pad = max(16, scale * 4)
    border = max(2, scale // 2)
    pw, ph = min(w - 8, text_w + 2 * pad), min(h - 8, text_h + 2 * pad)
    px0, py0 = (w - pw) // 2, (h - ph) // 2
    px1, py1 = px0 + pw, py0 + ph
    off = max(6, scale * 2)

    # Per-row list of (x0, mask, colour) text overlays.
    overlays: dict[int, tuple[int, bytes, int]] = {}
    y = py0 + pad
    for (text, s, colour), gap in zip(items, gaps + [0], strict=True):
        masks = text_masks(text, s)
        tw = len(text) * GLYPH_W * s - s
        x0 = (w - tw) // 2
        for r, mask in enumerate(masks):
            for yy in range(y + r * s, y + (r + 1) * s):
                overlays[yy] = (x0, mask[:tw], colour)
        y += GLYPH_H * s + gap

    border_seg = bytes([_BORDER]) * pw
    edge = bytes([_BORDER]) * border
    for y in range(py0, min(h, py1 + off)):
        row = bytearray(rows[y])
        if y >= py0 + off:  # drop shadow, right of and below the card
            sx0, sx1 = (px1 if y < py1 else px0 + off), min(w, px1 + off)
            row[sx0:sx1] = row[sx0:sx1].translate(_SHADOW)
        if y < py1:
            if y < py0 + border or y >= py1 - border:
                row[px0:px1] = border_seg
            else:
                row[px0:px1] = row[px0:px1].translate(_GLASS)
                row[px0 : px0 + border] = edge
                row[px1 - border : px1] = edge
                over = overlays.get(y)
                if over is not None:
                    x0, mask, colour = over
                    n = len(mask)
                    seg = int.from_bytes(row[x0 : x0 + n], "big")
                    m = int.from_bytes(mask, "big")
                    ink = int.from_bytes(bytes([colour]) * n, "big")
                    row[x0 : x0 + n] = ((seg & ~m) | (ink & m)).to_bytes(n, "big")
        rows[y] = bytes(row)

    # Filter type 0 (None) except rows equal to the previous one: type 2 (Up) turns those into
    # zeros. Run-length deflate is fast and suits these flat colour runs.
    zero_row = b"\x02" + bytes(w)
    parts: list[bytes] = []
    prev: bytes | None = None
    for line in rows:
        parts.append(zero_row if line == prev else b"\x00" + line)
        prev = line
    packer = zlib.compressobj(6, zlib.DEFLATED, 15, 9, zlib.Z_RLE)
    idat = packer.compress(b"".join(parts)) + packer.flush()
    return b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 3, 0, 0, 0)),
            _png_chunk(b"PLTE", _png_palette(theme)),
            _png_chunk(b"IDAT", idat),
            _png_chunk(b"IEND", b""),
        )
    )
