"""What stills and clips share: the aspect ratios, the prompt's digest and colours, a 5x7 font."""

from __future__ import annotations

import colorsys
import hashlib

from ..spec import DEFAULT_RATIO, RATIOS

_SIZES: dict[str, tuple[int, int]] = {  # the pixels of each ratio the contract has (spec.RATIOS)
    "1:1": (1024, 1024),
    "16:9": (1280, 720),
    "9:16": (720, 1280),
    "4:3": (1024, 768),
    "3:4": (768, 1024),
    "3:2": (1152, 768),
    "2:3": (768, 1152),
    "21:9": (1680, 720),
}
ASPECT_RATIOS: dict[str, tuple[int, int]] = {ratio: _SIZES[ratio] for ratio in RATIOS}  # KeyError: a size to add
DEFAULT_ASPECT_RATIO = DEFAULT_RATIO["image"]

RGB = tuple[int, int, int]  # also (Y, Cb, Cr) in mp4


def ratio_of(aspect_ratio: str | None) -> str:
    """The ratio itself, or the default for None; ValueError for one that is not in ASPECT_RATIOS."""
    if aspect_ratio is None:
        return DEFAULT_ASPECT_RATIO
    if not isinstance(aspect_ratio, str) or aspect_ratio not in ASPECT_RATIOS:
        raise ValueError(f"unknown aspect ratio {aspect_ratio!r}; expected one of {', '.join(ASPECT_RATIOS)}")
    return aspect_ratio


def prompt_digest(prompt: str) -> bytes:
    """The SHA-256 of the prompt: every pattern, colour and position is read off it."""
    return hashlib.sha256(prompt.encode("utf-8", "surrogatepass")).digest()


def hsv(h: float, s: float, v: float) -> RGB:
    """An 8-bit RGB colour from hue (wrapped), saturation and value (clamped to 0..1)."""
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(1.0, max(0.0, s)), min(1.0, max(0.0, v)))
    return round(r * 255), round(g * 255), round(b * 255)


def mix(a: RGB, b: RGB, t: float) -> RGB:
    """The colour at ``t`` (0..1) of the way from ``a`` to ``b``."""
    return (
        round(a[0] + (b[0] - a[0]) * t),
        round(a[1] + (b[1] - a[1]) * t),
        round(a[2] + (b[2] - a[2]) * t),
    )


class Theme:
    """Colours derived from the prompt hash (shared by stills and clips)."""

    def __init__(self, digest: bytes) -> None:
        hue = digest[0] / 256
        hue2 = hue + 0.10 + digest[1] / 255 * 0.40
        sat = 0.50 + digest[2] / 255 * 0.35
        self.dark = hsv(hue, sat, 0.28 + digest[5] / 255 * 0.12)
        self.light = hsv(hue2, sat * 0.80, 0.92)
        self.gradient = [mix(self.dark, self.light, i / 7) for i in range(8)]
        self.accent = hsv(hue2 + 0.5, 0.70, 1.0)
        self.accent2 = hsv(hue + 0.33, 0.75, 0.98)
        self.ink = mix((250, 250, 248), self.light, 0.08)


# Classic 5x7 font for ASCII 0x20..0x5F: five column bytes per glyph, bit 0 is the top row.
_FONT_HEX = (
    "000000000000005f00000007000700147f147f14242a7f2a12231308646236495522500005030000"
    "001c2241000041221c00142a1c2a1408083e08080050300000080808080800606000002010080402"
    "3e5149453e00427f400042615149462141454b311814127f1027454545393c4a4949300171090503"
    "3649494936064949291e003636000000563600000814224100141414141400412214080201510906"
    "324979413e7e1111117e7f494949363e414141227f4141221c7f494949417f090901013e41415132"
    "7f0808087f00417f41002040413f017f081422417f404040407f0204027f7f0408107f3e4141413e"
    "7f090909063e4151215e7f09192946464949493101017f01013f4040403f1f2040201f7f2018207f"
    "631408146303047804036151494543007f41410002040810200041417f0004020102044040404040"
)


def _build_glyphs() -> list[tuple[int, ...]]:
    data = bytes.fromhex(_FONT_HEX)
    glyphs: list[tuple[int, ...]] = []
    for i in range(len(data) // 5):
        cols = data[i * 5 : i * 5 + 5]
        glyphs.append(tuple(sum(((cols[c] >> row) & 1) << (4 - c) for c in range(5)) for row in range(7)))
    return glyphs


_GLYPHS = _build_glyphs()
GLYPH_W = 6  # five columns of ink plus one column of spacing
GLYPH_H = 7


def sanitize(text: str, limit: int) -> str:
    """Upper-case ASCII the font can draw; anything else becomes '?'."""
    cleaned = "".join(ch if 32 <= ord(ch) < 96 else "?" for ch in " ".join(text.split()).upper())
    if len(cleaned) > limit:
        cleaned = cleaned[: max(1, limit - 3)].rstrip() + "..."
    return cleaned


def text_masks(text: str, scale: int) -> list[bytes]:
    """Seven rows (one per font row) of 0xFF/0x00 bytes covering ``text`` at ``scale``."""
    on, off = b"\xff" * scale, b"\x00" * scale
    pieces: dict[int, bytes] = {}
    masks: list[bytes] = []
    for row in range(GLYPH_H):
        parts: list[bytes] = []
        for ch in text:
            bits = _GLYPHS[ord(ch) - 32][row]
            piece = pieces.get(bits)
            if piece is None:
                piece = b"".join(on if bits >> (4 - c) & 1 else off for c in range(5)) + off
                pieces[bits] = piece
            parts.append(piece)
        masks.append(b"".join(parts))
    return masks
