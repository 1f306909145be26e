"""MP4 clips: deterministic, prompt-dependent 2-second clips from a tiny H.264 Constrained Baseline encoder.

Frame 0 (IDR) paints a design in which every macroblock row is horizontally invariant except
a few macroblocks (the first column, the moving shapes, the caption): those are I_PCM, every
other macroblock is I_16x16 horizontal prediction with no residual, which reproduces the design
exactly. Later frames are P frames whose macroblock rows are either skipped or shifted
horizontally by an integer motion vector (P_L0_16x16, no residual): shapes bounce, a progress
bar grows from the left edge. No transforms, no drift, a few bytes per P frame.
"""

from __future__ import annotations

import math
import re
import struct
from functools import lru_cache

from .common import RGB, Theme, hsv, mix, prompt_digest, ratio_of, sanitize, text_masks

# Video frames are much smaller than stills but keep exactly the same ratio (even sizes for 4:2:0).
_VIDEO_SIZES: dict[str, tuple[int, int]] = {
    "1:1": (256, 256),
    "16:9": (320, 180),
    "9:16": (180, 320),
    "4:3": (320, 240),
    "3:4": (240, 320),
    "3:2": (288, 192),
    "2:3": (192, 288),
    "21:9": (336, 144),
}


def video_size(aspect_ratio: str | None) -> tuple[int, int]:
    """Displayed pixel (width, height) of a generated video; None means the default ratio."""
    return _VIDEO_SIZES[ratio_of(aspect_ratio)]


_FPS = 24
_FRAMES = 48
_TIMESCALE = 12288
_FRAME_TICKS = _TIMESCALE // _FPS
_EPB = re.compile(b"\x00\x00(?=[\x00-\x03])")
_LOG2_MAX_FRAME_NUM = 8


@lru_cache(maxsize=1024)
def _ue(v: int) -> str:
    b = bin(v + 1)[2:]
    return "0" * (len(b) - 1) + b


def _se(v: int) -> str:
    return _ue(2 * v - 1 if v > 0 else -2 * v)


class _BitWriter:
    def __init__(self) -> None:
        self._out = bytearray()
        self._bits: list[str] = []
        self._len = 0

    def bits(self, s: str) -> None:
        self._bits.append(s)
        self._len += len(s)

    def u(self, n: int, v: int) -> None:
        self.bits(format(v, f"0{n}b"))

    def ue(self, v: int) -> None:
        self.bits(_ue(v))

    def se(self, v: int) -> None:
        self.bits(_se(v))

    def align_zero(self) -> None:
        if self._len % 8:
            self.bits("0" * (-self._len % 8))

    def _flush(self) -> None:
        s = "".join(self._bits)
        self._bits = []
        if s:
            self._out += int(s, 2).to_bytes(len(s) // 8, "big")

    def raw(self, data: bytes) -> None:
        self.align_zero()
        self._flush()
        self._out += data
        self._len += 8 * len(data)

    def rbsp(self) -> bytes:
        self.bits("1")
        self.align_zero()
        self._flush()
        return bytes(self._out)


def _nal(ref_idc: int, nal_type: int, rbsp: bytes) -> bytes:
    return bytes([ref_idc << 5 | nal_type]) + _EPB.sub(b"\x00\x00\x03", rbsp)


def _sps(mb_w: int, mb_h: int, crop_right: int, crop_bottom: int) -> bytes:
    bw = _BitWriter()
    bw.u(8, 66)  # profile_idc: Baseline
    bw.u(8, 0xC0)  # constraint_set0_flag + constraint_set1_flag: Constrained Baseline
    bw.u(8, 30)  # level_idc 3.0
    bw.ue(0)  # seq_parameter_set_id
    bw.ue(_LOG2_MAX_FRAME_NUM - 4)
    bw.ue(2)  # pic_order_cnt_type: output order is decoding order
    bw.ue(1)  # max_num_ref_frames
    bw.u(1, 0)  # gaps_in_frame_num_value_allowed_flag
    bw.ue(mb_w - 1)
    bw.ue(mb_h - 1)
    bw.u(1, 1)  # frame_mbs_only_flag
    bw.u(1, 1)  # direct_8x8_inference_flag
    if crop_right or crop_bottom:
        bw.u(1, 1)
        for v in (0, crop_right // 2, 0, crop_bottom // 2):  # in 2-sample units (4:2:0)
            bw.ue(v)
    else:
        bw.u(1, 0)
    bw.u(1, 0)  # vui_parameters_present_flag
    return _nal(3, 7, bw.rbsp())


def _pps() -> bytes:
    bw = _BitWriter()
    bw.ue(0)  # pic_parameter_set_id
    bw.ue(0)  # seq_parameter_set_id
    bw.u(1, 0)  # entropy_coding_mode_flag: CAVLC
    bw.u(1, 0)  # bottom_field_pic_order_in_frame_present_flag
    bw.ue(0)  # num_slice_groups_minus1
    bw.ue(0)  # num_ref_idx_l0_default_active_minus1
    bw.ue(0)  # num_ref_idx_l1_default_active_minus1
    bw.u(1, 0)  # weighted_pred_flag
    bw.u(2, 0)  # weighted_bipred_idc
    bw.se(0)  # pic_init_qp_minus26
    bw.se(0)  # pic_init_qs_minus26
    bw.se(0)  # chroma_qp_index_offset
    bw.u(1, 1)  # deblocking_filter_control_present_flag
    bw.u(1, 0)  # constrained_intra_pred_flag
    bw.u(1, 0)  # redundant_pic_cnt_present_flag
    return _nal(3, 8, bw.rbsp())


def _slice_header(bw: _BitWriter, idr: bool, frame_num: int) -> None:
    bw.ue(0)  # first_mb_in_slice
    bw.ue(7 if idr else 5)  # slice_type: I / P (all slices of the picture)
    bw.ue(0)  # pic_parameter_set_id
    bw.u(_LOG2_MAX_FRAME_NUM, frame_num % (1 << _LOG2_MAX_FRAME_NUM))
    if idr:
        bw.ue(0)  # idr_pic_id
    else:
        bw.u(1, 0)  # num_ref_idx_active_override_flag
        bw.u(1, 0)  # ref_pic_list_modification_flag_l0
    if idr:
        bw.u(1, 0)  # no_output_of_prior_pics_flag
        bw.u(1, 0)  # long_term_reference_flag
    else:
        bw.u(1, 0)  # adaptive_ref_pic_marking_mode_flag
    bw.se(0)  # slice_qp_delta
    bw.ue(1)  # disable_deblocking_filter_idc: off, so reconstruction is exact


def _coeff_token_zero(nc: int) -> str:
    """coeff_token for TotalCoeff 0 (CAVLC table 9-5) for a given nC."""
    if nc < 2:
        return "1"
    if nc < 4:
        return "11"
    if nc < 8:
        return "1111"
    return "000011"


class _Planes:
    """A YCbCr 4:2:0 picture as rows of bytearrays (coded size)."""

    def __init__(self, w: int, h: int) -> None:
        self.w, self.h = w, h
        self.y = [bytearray(w) for _ in range(h)]
        self.cb = [bytearray(w // 2) for _ in range(h // 2)]
        self.cr = [bytearray(w // 2) for _ in range(h // 2)]

    def fill(self, x0: int, x1: int, y0: int, y1: int, ycc: RGB) -> None:
        """Fill a rectangle given in luma coordinates (even bounds keep chroma exact)."""
        yv, cbv, crv = ycc
        for y in range(max(0, y0), min(self.h, y1)):
            self.y[y][x0:x1] = bytes([yv]) * (x1 - x0)
        cx0, cx1 = x0 // 2, (x1 + 1) // 2
        for y in range(max(0, y0 // 2), min(self.h // 2, (y1 + 1) // 2)):
            self.cb[y][cx0:cx1] = bytes([cbv]) * (cx1 - cx0)
            self.cr[y][cx0:cx1] = bytes([crv]) * (cx1 - cx0)

    def macroblock(self, mx: int, my: int) -> bytes:
        x, y, cx, cy = mx * 16, my * 16, mx * 8, my * 8
        return b"".join(
            [bytes(self.y[y + r][x : x + 16]) for r in range(16)]
            + [bytes(self.cb[cy + r][cx : cx + 8]) for r in range(8)]
            + [bytes(self.cr[cy + r][cx : cx + 8]) for r in range(8)]
        )

    def flat_rows(self, my: int) -> bool:
        """True if every row of macroblock row my is a single value in all three planes."""
        lumas = self.y[my * 16 : my * 16 + 16]
        chromas = self.cb[my * 8 : my * 8 + 8] + self.cr[my * 8 : my * 8 + 8]
        return not any(row.strip(row[:1]) for row in lumas + chromas)

    def needs_pcm(self, mx: int, my: int) -> bool:
        """True unless the macroblock equals its left neighbour's last column, repeated."""
        if mx == 0:
            return True
        x, y = mx * 16, my * 16
        for r in range(y, y + 16):
            row = self.y[r]
            if row[x - 1 : x + 15] != row[x : x + 16]:
                return True
        cx, cy = mx * 8, my * 8
        for plane in (self.cb, self.cr):
            for r in range(cy, cy + 8):
                row = plane[r]
                if row[cx - 1 : cx + 7] != row[cx : cx + 8]:
                    return True
        return False


def _ycc(rgb: RGB) -> RGB:
    """BT.601 limited-range YCbCr."""
    r, g, b = rgb
    y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    cb = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
    cr = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255
    return (
        min(235, max(16, round(y))),
        min(240, max(16, round(cb))),
        min(240, max(16, round(cr))),
    )


def _shape_spans(kind: int, v: float, inset: float) -> list[tuple[float, float]]:
    """Horizontal spans of a shape in a 32x32 box at vertical position v (box coordinates)."""
    dy = abs(v - 16)
    if kind == 0:  # disc
        r = 14 - inset
        if dy >= r:
            return []
        dx = math.sqrt(r * r - dy * dy)
    elif kind == 1:  # diamond
        dx = 15 - 1.5 * inset - dy
        if dx <= 0:
            return []
    elif kind == 2:  # rounded square
        half, radius = 13 - inset, 6
        if dy >= half:
            return []
        corner = max(0.0, dy - (half - radius))
        dx = half - radius + math.sqrt(max(0.0, radius * radius - corner * corner))
    else:  # ring
        outer, inner = 14 - inset, 7 + inset
        if dy >= outer:
            return []
        dx = math.sqrt(outer * outer - dy * dy)
        if dy < inner:
            gap = math.sqrt(inner * inner - dy * dy)
            return [(16 - dx, 16 - gap), (16 + gap, 16 + dx)]
    return [(16 - dx, 16 + dx)]


def _draw_shape(planes: _Planes, kind: int, x0: int, y0: int, colour: RGB) -> None:
    """A filled shape with a dark outline in the 32x32 box at (x0, y0) (even coordinates)."""
    outline = mix(colour, (0, 0, 0), 0.6)
    for inset, rgb in ((0.0, outline), (2.0, colour)):
        yv, cbv, crv = _ycc(rgb)
        for r in range(32):
            for a, b in _shape_spans(kind, r + 0.5, inset):
                xa, xb = x0 + round(a), x0 + round(b)
                if xb > xa:
                    planes.y[y0 + r][xa:xb] = bytes([yv]) * (xb - xa)
        for r in range(16):
            for a, b in _shape_spans(kind, 2 * r + 1.0, inset):
                xa, xb = (x0 + round(a)) // 2, (x0 + round(b) + 1) // 2
                if xb > xa:
                    planes.cb[y0 // 2 + r][xa:xb] = bytes([cbv]) * (xb - xa)
                    planes.cr[y0 // 2 + r][xa:xb] = bytes([crv]) * (xb - xa)


def _bounce(x0: int, speed: int, t: int, span: int) -> int:
    if span <= 0:
        return x0
    m = (x0 + speed * t) % (2 * span)
    return m if m <= span else 2 * span - m


def _median(a: int, b: int, c: int) -> int:
    return max(min(a, b), min(max(a, b), c))


@lru_cache(maxsize=512)
def _p_row(
    mb_w: int, above: tuple[tuple[int, int], ...] | None, target: tuple[int, int]
) -> tuple[tuple[tuple[int, int], ...], tuple[tuple[int, str], ...], int]:
    """Code one macroblock row of a P slice in which every macroblock should move by target.

    Returns the row's motion vectors, the coded macroblocks as (skipped macroblocks before it,
    bits after mb_skip_run) and the number of skipped macroblocks at the end of the row.
    """
    row: list[tuple[int, int]] = []
    coded: list[tuple[int, str]] = []
    skip = 0
    unavailable = (-1, (0, 0))
    for mx in range(mb_w):
        # Neighbours A (left), B (above), C (above right, else D above left). Every macroblock
        # of these P slices is inter-predicted from refIdx 0.
        a = (0, row[mx - 1]) if mx else unavailable
        if above is None:
            b = c = unavailable
        else:
            b = (0, above[mx])
            if mx + 1 < mb_w:
                c = (0, above[mx + 1])
            else:
                c = (0, above[mx - 1]) if mx else unavailable
        if target == (0, 0) and (a is unavailable or b is unavailable or a[1] == (0, 0) or b[1] == (0, 0)):
            # P_Skip infers exactly this zero motion (8.4.1.1).
            skip += 1
            row.append((0, 0))
            continue
        if b is unavailable and c is unavailable and a is not unavailable:
            b = c = a
        same = [n[1] for n in (a, b, c) if n[0] == 0]
        if len(same) == 1:
            pred = same[0]
        else:
            pred = (_median(a[1][0], b[1][0], c[1][0]), _median(a[1][1], b[1][1], c[1][1]))
        # mb_type P_L0_16x16, mvd_l0 x and y, coded_block_pattern 0 (no residual)
        coded.append((skip, "1" + _se(target[0] - pred[0]) + _se(target[1] - pred[1]) + "1"))
        skip = 0
        row.append(target)
    return tuple(row), tuple(coded), skip


def _p_slice_data(mb_w: int, mb_h: int, shifts: tuple[int, ...]) -> str:
    """Slice data bits of a P frame shifting macroblock row r right by shifts[r] pixels."""
    out: list[str] = []
    skip = 0
    above: tuple[tuple[int, int], ...] | None = None
    for my in range(mb_h):
        # A prediction block at x reads the reference at x + mv / 4: move right = negative mv.
        above, coded, trailing = _p_row(mb_w, above, (-4 * shifts[my], 0))
        for before, bits in coded:
            out.append(_ue(skip + before) + bits)
            skip = 0
        skip += trailing
    if skip:
        out.append(_ue(skip))
    return "".join(out)


def _h264_frames(prompt: str, dw: int, dh: int) -> tuple[bytes, bytes, list[bytes]]:
    """SPS, PPS and one access unit (a single NAL unit) per frame."""
    d = prompt_digest(prompt)
    theme = Theme(d)
    cw, ch = (dw + 15) // 16 * 16, (dh + 15) // 16 * 16
    mb_w, mb_h = cw // 16, ch // 16
    planes = _Planes(cw, ch)

    # Background: a vertical gradient (every row constant).
    top, bottom = theme.dark, theme.light
    for y in range(ch):
        yv = _ycc(mix(top, bottom, min(1.0, y / (dh - 1))))[0]
        planes.y[y][:] = bytes([yv]) * cw
    for y in range(ch // 2):
        _, cbv, crv = _ycc(mix(top, bottom, min(1.0, (2 * y + 0.5) / (dh - 1))))
        planes.cb[y][:] = bytes([cbv]) * (cw // 2)
        planes.cr[y][:] = bytes([crv]) * (cw // 2)

    visible_rows = dh // 16
    caption_row = visible_rows - 1
    # Progress bar in macroblock row 0: it starts 4 px wide at the left edge and is stretched by
    # shifting the row right (the left edge column is replicated by motion compensation).
    planes.fill(0, 4, 2, 6, _ycc(theme.accent))
    bar = [4 + (dw - 4) * t // (_FRAMES - 1) // 2 * 2 for t in range(_FRAMES)]

    # Caption: the prompt on a dark band in the last fully visible macroblock row.
    cap_y = caption_row * 16
    planes.fill(0, cw, cap_y, cap_y + 16, _ycc(mix(theme.dark, (0, 0, 0), 0.65)))
    caption = sanitize(prompt, max(4, (dw - 8) // 12)) or "MOCKGEN"
    ink = bytes([_ycc(theme.ink)[0]])
    for r, mask in enumerate(text_masks(caption, 2)):
        for yy in (cap_y + 2 + 2 * r, cap_y + 3 + 2 * r):
            line = planes.y[yy]
            for x, bit in enumerate(mask, start=4):
                if bit and x < cw:
                    line[x] = ink[0]

    # Bouncing shapes, each 2x2 macroblocks, in their own macroblock rows.
    free = caption_row - 1  # rows 1 .. caption_row - 1
    count = max(1, min(5, (free + 1) // 3))
    span = dw - 32
    shapes: list[tuple[int, int, int]] = []  # (first mb row, start x, speed)
    hue = d[0] / 256
    for k in range(count):
        my = 1 + ((free - 2) * k // (count - 1) if count > 1 else (free - 2) // 2)
        x0 = 16 * (d[8 + k] % (span // 16 + 1))
        speed = (2 + 2 * (d[18 + k] % 4)) * (1 if d[23 + k] % 2 else -1)
        colour = hsv(hue + 0.45 + 0.19 * k + d[28 + k % 4] / 2550, 0.62, 1.0)
        _draw_shape(planes, (d[13] + k) % 4, x0, my * 16, colour)
        shapes.append((my, x0, speed))

    # IDR frame.
    nnz = [[0] * mb_w for _ in range(mb_h)]
    bw = _BitWriter()
    _slice_header(bw, True, 0)
    for my in range(mb_h):
        flat = planes.flat_rows(my)
        for mx in range(mb_w):
            if mx == 0 or (not flat and planes.needs_pcm(mx, my)):
                nnz[my][mx] = 16
                bw.ue(25)  # I_PCM
                bw.raw(planes.macroblock(mx, my))
            else:
                n_a = nnz[my][mx - 1]
                nc = (n_a + nnz[my - 1][mx] + 1) >> 1 if my else n_a
                # I_16x16_1_0_0 (horizontal, no residual), chroma horizontal, mb_qp_delta 0,
                # then the (empty) Intra16x16DCLevel block.
                bw.bits("011" + "010" + "1" + _coeff_token_zero(nc))
    frames = [_nal(3, 5, bw.rbsp())]

    # P frames.
    cache: dict[tuple[int, ...], str] = {}
    for t in range(1, _FRAMES):
        shifts = [0] * mb_h
        shifts[0] = bar[t] - bar[t - 1]
        for my, x0, speed in shapes:
            step = _bounce(x0, speed, t, span) - _bounce(x0, speed, t - 1, span)
            shifts[my] = shifts[my + 1] = step
        key = tuple(shifts)
        data = cache.get(key)
        if data is None:
            data = cache[key] = _p_slice_data(mb_w, mb_h, key)
        bw = _BitWriter()
        _slice_header(bw, False, t)
        bw.bits(data)
        frames.append(_nal(2, 1, bw.rbsp()))
    crop_r, crop_b = cw - dw, ch - dh
    return _sps(mb_w, mb_h, crop_r, crop_b), _pps(), frames


def _box(kind: bytes, *parts: bytes) -> bytes:
    body = b"".join(parts)
    return struct.pack(">I", 8 + len(body)) + kind + body


def _full_box(kind: bytes, version: int, flags: int, *parts: bytes) -> bytes:
    return _box(kind, struct.pack(">I", version << 24 | flags), *parts)


_MATRIX = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)


def _moov(w: int, h: int, sps: bytes, pps: bytes, sizes: list[int], mdat_offset: int) -> bytes:
    n = len(sizes)
    movie_duration = n * 1000 // _FPS
    mvhd = _full_box(
        b"mvhd", 0, 0,
        struct.pack(">IIIIIH", 0, 0, 1000, movie_duration, 0x10000, 0x100),
        bytes(10), _MATRIX, bytes(24), struct.pack(">I", 2),
    )  # fmt: skip
    tkhd = _full_box(
        b"tkhd", 0, 3,
        struct.pack(">IIIII", 0, 0, 1, 0, movie_duration), bytes(8),
        struct.pack(">hhhH", 0, 0, 0, 0), _MATRIX, struct.pack(">II", w << 16, h << 16),
    )  # fmt: skip
    mdhd = _full_box(b"mdhd", 0, 0, struct.pack(">IIIIHH", 0, 0, _TIMESCALE, n * _FRAME_TICKS, 0x55C4, 0))
    hdlr = _full_box(b"hdlr", 0, 0, bytes(4), b"vide", bytes(12), b"VideoHandler\x00")
    vmhd = _full_box(b"vmhd", 0, 1, bytes(8))
    dinf = _box(b"dinf", _full_box(b"dref", 0, 0, struct.pack(">I", 1), _full_box(b"url ", 0, 1)))
    avcc = _box(
        b"avcC",
        bytes([1, sps[1], sps[2], sps[3], 0xFF, 0xE1]), struct.pack(">H", len(sps)), sps,
        bytes([1]), struct.pack(">H", len(pps)), pps,
    )  # fmt: skip
    name = b"mockgen"
    avc1 = _box(
        b"avc1",
        bytes(6), struct.pack(">HHH", 1, 0, 0), bytes(12),
        struct.pack(">HHIIIH", w, h, 0x480000, 0x480000, 0, 1),
        bytes([len(name)]) + name.ljust(31, b"\x00"),
        struct.pack(">Hh", 0x18, -1), avcc,
    )  # fmt: skip
    stbl = _box(
        b"stbl",
        _full_box(b"stsd", 0, 0, struct.pack(">I", 1), avc1),
        _full_box(b"stts", 0, 0, struct.pack(">III", 1, n, _FRAME_TICKS)),
        _full_box(b"stss", 0, 0, struct.pack(">II", 1, 1)),
        _full_box(b"stsc", 0, 0, struct.pack(">IIII", 1, 1, n, 1)),
        _full_box(b"stsz", 0, 0, struct.pack(f">II{n}I", 0, n, *sizes)),
        _full_box(b"stco", 0, 0, struct.pack(">II", 1, mdat_offset)),
    )
    minf = _box(b"minf", vmhd, dinf, stbl)
    mdia = _box(b"mdia", mdhd, hdlr, minf)
    return _box(b"moov", mvhd, _box(b"trak", tkhd, mdia))


def render_mp4(prompt: str, aspect_ratio: str | None) -> bytes:
    """A deterministic, prompt-dependent 2-second H.264 clip of ``video_size(aspect_ratio)``."""
    w, h = video_size(aspect_ratio)
    sps, pps, frames = _h264_frames(prompt, w, h)
    samples = [struct.pack(">I", len(nal)) + nal for nal in frames]
    sizes = [len(s) for s in samples]
    ftyp = _box(b"ftyp", b"isom", struct.pack(">I", 0x200), b"isomiso2avc1mp41")
    moov_len = len(_moov(w, h, sps, pps, sizes, 0))
    moov = _moov(w, h, sps, pps, sizes, len(ftyp) + moov_len + 8)
    return b"".join([ftyp, moov, _box(b"mdat", *samples)])
