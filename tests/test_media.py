"""Tests for mockgen.media: structure of the generated PNG stills and MP4 clips (no ffmpeg)."""

from __future__ import annotations

import struct
import zlib
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mockgen import media

RATIOS = list(media.ASPECT_RATIOS)
REQUIRED_RATIOS = ["1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3", "21:9"]
PROMPT = "a cat astronaut floating above a neon city at dusk"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"dinf", b"stbl", b"edts"}


def ratio_fraction(ratio: str) -> Fraction:
    a, b = ratio.split(":")
    return Fraction(int(a), int(b))


# ------------------------------------------------------------------------------------------
# PNG helpers
# ------------------------------------------------------------------------------------------


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """Split a PNG into (type, data) chunks, checking the signature and every CRC."""
    assert data[:8] == PNG_SIGNATURE
    chunks = []
    pos = 8
    while pos < len(data):
        assert pos + 12 <= len(data), "truncated chunk header"
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        assert len(body) == length, f"truncated {kind!r} chunk"
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body), f"bad CRC in {kind!r}"
        chunks.append((kind, body))
        pos += 12 + length
    assert pos == len(data)
    return chunks


def png_decode(data: bytes) -> tuple[int, int, bytes, list[bytes]]:
    """Width, height, palette and unfiltered rows of an 8-bit indexed-colour PNG."""
    chunks = png_chunks(data)
    kinds = [kind for kind, _ in chunks]
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND"
    assert b"IDAT" in kinds and b"PLTE" in kinds
    assert kinds.index(b"PLTE") < kinds.index(b"IDAT")
    w, h, depth, colour_type, compression, filtering, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (depth, colour_type, compression, filtering, interlace) == (8, 3, 0, 0, 0)
    palette = next(body for kind, body in chunks if kind == b"PLTE")
    assert len(palette) % 3 == 0 and 1 <= len(palette) // 3 <= 256
    raw = zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))
    assert len(raw) == h * (w + 1), "IDAT does not hold exactly height rows of width + 1 bytes"
    rows: list[bytes] = []
    prev = bytes(w)
    for y in range(h):
        kind, line = raw[y * (w + 1)], raw[y * (w + 1) + 1 : (y + 1) * (w + 1)]
        assert kind <= 4, f"row {y}: unknown filter type {kind}"
        if kind == 0:
            row = line
        elif kind == 2 and not any(line):
            row = prev
        else:  # general (slow) path, for completeness
            out = bytearray(w)
            for x in range(w):
                left = out[x - 1] if x else 0
                up = prev[x]
                up_left = prev[x - 1] if x else 0
                if kind == 1:
                    pred = left
                elif kind == 2:
                    pred = up
                elif kind == 3:
                    pred = (left + up) // 2
                else:
                    p = left + up - up_left
                    pa, pb, pc = abs(p - left), abs(p - up), abs(p - up_left)
                    pred = left if pa <= pb and pa <= pc else up if pb <= pc else up_left
                out[x] = (line[x] + pred) & 0xFF
            row = bytes(out)
        rows.append(row)
        prev = row
    return w, h, palette, rows


# ------------------------------------------------------------------------------------------
# MP4 / H.264 helpers
# ------------------------------------------------------------------------------------------


def mp4_boxes(data: bytes, start: int = 0, end: int | None = None) -> list[tuple[bytes, int, int]]:
    """(type, payload start, payload end) of the boxes in data[start:end]."""
    end = len(data) if end is None else end
    boxes = []
    pos = start
    while pos < end:
        assert pos + 8 <= end, "truncated box header"
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        header = 8
        if size == 1:
            (size,) = struct.unpack(">Q", data[pos + 8 : pos + 16])
            header = 16
        elif size == 0:
            size = end - pos
        assert size >= header and pos + size <= end, f"box {kind!r} overruns its parent"
        boxes.append((kind, pos + header, pos + size))
        pos += size
    assert pos == end
    return boxes


def mp4_tree(data: bytes) -> dict[str, list[tuple[int, int]]]:
    """Map of box paths (e.g. 'moov/trak/tkhd') to payload ranges, descending into containers."""
    tree: dict[str, list[tuple[int, int]]] = {}

    def walk(start: int, end: int, prefix: str) -> None:
        for kind, a, b in mp4_boxes(data, start, end):
            path = prefix + kind.decode("latin-1")
            tree.setdefault(path, []).append((a, b))
            if kind in CONTAINERS:
                walk(a, b, path + "/")
            elif kind == b"stsd":
                walk(a + 8, b, path + "/")  # version/flags + entry_count, then sample entries
            elif kind == b"avc1":
                walk(a + 78, b, path + "/")  # VisualSampleEntry fields, then child boxes

    walk(0, len(data), "")
    return tree


def one(tree: dict[str, list[tuple[int, int]]], path: str) -> tuple[int, int]:
    assert path in tree, f"missing box {path}"
    assert len(tree[path]) == 1, f"more than one {path}"
    return tree[path][0]


def unescape_rbsp(nal: bytes) -> bytes:
    """Remove emulation prevention bytes (00 00 03 -> 00 00) from a NAL unit payload."""
    out = bytearray()
    zeros = 0
    for byte in nal:
        if zeros >= 2 and byte == 3:
            zeros = 0
            continue
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


class BitReader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def u(self, n: int) -> int:
        value = 0
        for _ in range(n):
            byte = self.data[self.pos // 8]
            value = value << 1 | (byte >> (7 - self.pos % 8)) & 1
            self.pos += 1
        return value

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k % 2 else -(k // 2)


def parse_sps(sps: bytes) -> dict[str, int]:
    assert sps[0] & 0x1F == 7
    r = BitReader(unescape_rbsp(sps[1:]))
    info = {"profile_idc": r.u(8), "constraints": r.u(8), "level_idc": r.u(8)}
    r.ue()  # seq_parameter_set_id
    r.ue()  # log2_max_frame_num_minus4
    info["poc_type"] = r.ue()
    assert info["poc_type"] == 2, "the helper only follows pic_order_cnt_type 2"
    info["max_num_ref_frames"] = r.ue()
    r.u(1)
    mb_w, mb_h = r.ue() + 1, r.ue() + 1
    assert r.u(1) == 1, "frame_mbs_only_flag"
    r.u(1)
    left = right = top = bottom = 0
    if r.u(1):
        left, right, top, bottom = r.ue(), r.ue(), r.ue(), r.ue()
    info["width"] = mb_w * 16 - 2 * (left + right)
    info["height"] = mb_h * 16 - 2 * (top + bottom)
    return info


def mp4_info(data: bytes) -> dict:
    top = mp4_boxes(data)
    kinds = [kind for kind, _, _ in top]
    assert kinds[0] == b"ftyp"
    assert b"moov" in kinds and b"mdat" in kinds
    tree = mp4_tree(data)
    ftyp_a, ftyp_b = one(tree, "ftyp")
    ftyp = data[ftyp_a:ftyp_b]
    brands = {ftyp[i : i + 4] for i in range(8, len(ftyp), 4)} | {ftyp[:4]}

    a, _ = one(tree, "moov/trak/tkhd")
    assert data[a] == 0, "expected a version 0 tkhd"
    tkhd_w, tkhd_h = struct.unpack(">II", data[a + 76 : a + 84])

    a, _ = one(tree, "moov/trak/mdia/mdhd")
    timescale, duration = struct.unpack(">II", data[a + 12 : a + 20])
    a, _ = one(tree, "moov/trak/mdia/hdlr")
    handler = data[a + 8 : a + 12]

    stbl = "moov/trak/mdia/minf/stbl/"
    a, _ = one(tree, stbl + "stsd/avc1")
    entry_w, entry_h = struct.unpack(">HH", data[a + 24 : a + 28])
    a, b = one(tree, stbl + "stsd/avc1/avcC")
    avcc = data[a:b]
    assert avcc[0] == 1, "avcC configurationVersion"
    assert avcc[4] & 3 == 3, "4-byte NAL lengths"
    pos = 6
    sps_list = []
    for _ in range(avcc[5] & 0x1F):
        (n,) = struct.unpack(">H", avcc[pos : pos + 2])
        sps_list.append(avcc[pos + 2 : pos + 2 + n])
        pos += 2 + n
    pps_list = []
    for _ in range(avcc[pos]):
        (n,) = struct.unpack(">H", avcc[pos + 1 : pos + 3])
        pps_list.append(avcc[pos + 3 : pos + 3 + n])
        pos += 2 + n
    pos += 1
    assert pos == len(avcc)

    a, _ = one(tree, stbl + "stsz")
    sample_size, count = struct.unpack(">II", data[a + 4 : a + 12])
    if sample_size:
        sizes = [sample_size] * count
    else:
        sizes = list(struct.unpack(f">{count}I", data[a + 12 : a + 12 + 4 * count]))
    a, _ = one(tree, stbl + "stts")
    (entries,) = struct.unpack(">I", data[a + 4 : a + 8])
    stts = [struct.unpack(">II", data[a + 8 + 8 * i : a + 16 + 8 * i]) for i in range(entries)]
    a, _ = one(tree, stbl + "stco")
    (entries,) = struct.unpack(">I", data[a + 4 : a + 8])
    chunk_offsets = list(struct.unpack(f">{entries}I", data[a + 8 : a + 8 + 4 * entries]))
    a, _ = one(tree, stbl + "stsc")
    (entries,) = struct.unpack(">I", data[a + 4 : a + 8])
    stsc = [struct.unpack(">III", data[a + 8 + 12 * i : a + 20 + 12 * i]) for i in range(entries)]
    a, _ = one(tree, stbl + "stss")
    (entries,) = struct.unpack(">I", data[a + 4 : a + 8])
    sync = list(struct.unpack(f">{entries}I", data[a + 8 : a + 8 + 4 * entries]))

    mdat_a, mdat_b = one(tree, "mdat")
    return {
        "brands": brands,
        "tkhd_size": (tkhd_w, tkhd_h),
        "entry_size": (entry_w, entry_h),
        "timescale": timescale,
        "duration": duration,
        "handler": handler,
        "sps": sps_list,
        "pps": pps_list,
        "sizes": sizes,
        "stts": stts,
        "chunk_offsets": chunk_offsets,
        "stsc": stsc,
        "sync": sync,
        "mdat": (mdat_a, mdat_b),
        "tree": tree,
    }


def mp4_samples(data: bytes, info: dict) -> list[list[bytes]]:
    """The NAL units of each sample (single chunk layout, as written by media.render_mp4)."""
    assert info["chunk_offsets"] == [info["mdat"][0]]
    samples = []
    pos = info["chunk_offsets"][0]
    for size in info["sizes"]:
        sample, nals, i = data[pos : pos + size], [], 0
        while i < len(sample):
            (n,) = struct.unpack(">I", sample[i : i + 4])
            assert n > 0 and i + 4 + n <= len(sample), "bad NAL length prefix"
            nals.append(sample[i + 4 : i + 4 + n])
            i += 4 + n
        samples.append(nals)
        pos += size
    return samples


# ------------------------------------------------------------------------------------------
# Sizes
# ------------------------------------------------------------------------------------------


def test_required_ratios_and_default() -> None:
    assert set(REQUIRED_RATIOS) <= set(media.ASPECT_RATIOS)
    assert media.DEFAULT_ASPECT_RATIO == "1:1"
    assert media.image_size(None) == media.image_size("1:1")
    assert media.video_size(None) == media.video_size("1:1")


@pytest.mark.parametrize("ratio", RATIOS)
def test_sizes_match_ratio_exactly(ratio: str) -> None:
    w, h = media.image_size(ratio)
    assert media.ASPECT_RATIOS[ratio] == (w, h)
    assert Fraction(w, h) == ratio_fraction(ratio)
    vw, vh = media.video_size(ratio)
    assert Fraction(vw, vh) == ratio_fraction(ratio)
    assert vw % 2 == 0 and vh % 2 == 0, "4:2:0 video needs even dimensions"
    assert vw < w and vh < h


@pytest.mark.parametrize("bad", ["5:4", "", "1:1 ", "16x9", "wide", 7, 1.5])
def test_unknown_ratio_raises_value_error(bad: object) -> None:
    for func in (media.image_size, media.video_size):
        with pytest.raises(ValueError):
            func(bad)  # type: ignore[arg-type]
    for render in (media.render_png, media.render_mp4):
        with pytest.raises(ValueError):
            render(PROMPT, bad)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------
# PNG
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ratio", RATIOS)
def test_png_is_valid_and_sized(ratio: str) -> None:
    data = media.render_png(PROMPT, ratio)
    assert len(data) < 50_000
    w, h, palette, rows = png_decode(data)
    assert (w, h) == media.image_size(ratio)
    colours = len(palette) // 3
    used: set[int] = set()
    for row in rows[:: max(1, h // 64)]:
        used.update(row)
    assert max(used) < colours, "pixel refers to a palette entry that does not exist"
    assert len(used) >= 4, "expected a pattern and text, not a flat image"


def test_png_default_ratio() -> None:
    assert media.render_png(PROMPT, None) == media.render_png(PROMPT, "1:1")


@pytest.mark.parametrize("ratio", ["1:1", "21:9"])
def test_png_deterministic_and_prompt_dependent(ratio: str) -> None:
    first = media.render_png(PROMPT, ratio)
    assert media.render_png(PROMPT, ratio) == first
    others = {media.render_png(f"{PROMPT} #{i}", ratio) for i in range(5)}
    assert first not in others and len(others) == 5


@pytest.mark.parametrize(
    "prompt",
    ["", " ", "x", "Ünïcödé 日本語 🚀 prompt", "tab\tand\nnewline", "a" * 5000, "{|}~`" * 30],
)
def test_png_odd_prompts(prompt: str) -> None:
    for ratio in ("1:1", "9:16"):
        data = media.render_png(prompt, ratio)
        w, h, _, _ = png_decode(data)
        assert (w, h) == media.image_size(ratio)
        assert len(data) < 50_000


@settings(max_examples=25, deadline=None)
@given(prompt=st.text(max_size=120), ratio=st.sampled_from(RATIOS))
def test_png_any_prompt(prompt: str, ratio: str) -> None:
    data = media.render_png(prompt, ratio)
    kinds = [kind for kind, _ in png_chunks(data)]
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND"
    assert len(data) < 50_000
    assert media.render_png(prompt, ratio) == data


# ------------------------------------------------------------------------------------------
# MP4
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ratio", RATIOS)
def test_mp4_structure(ratio: str) -> None:
    data = media.render_mp4(PROMPT, ratio)
    assert len(data) < 200_000
    info = mp4_info(data)
    vw, vh = media.video_size(ratio)

    assert {b"isom", b"avc1"} <= info["brands"]
    assert info["tkhd_size"] == (vw << 16, vh << 16)
    assert info["entry_size"] == (vw, vh)
    assert info["handler"] == b"vide"
    for path in ("moov/mvhd", "moov/trak/mdia/minf/vmhd", "moov/trak/mdia/minf/dinf"):
        assert path in info["tree"]

    frames = len(info["sizes"])
    assert 12 <= frames <= 60
    assert sum(count for count, _ in info["stts"]) == frames
    assert 1.0 <= info["duration"] / info["timescale"] <= 2.5
    assert info["stsc"] == [(1, frames, 1)]
    assert info["sync"][0] == 1

    mdat_a, mdat_b = info["mdat"]
    assert sum(info["sizes"]) == mdat_b - mdat_a
    assert info["chunk_offsets"] == [mdat_a]

    # avcC holds the SPS and PPS, and the SPS describes a Constrained Baseline stream of the
    # advertised (cropped) size.
    assert len(info["sps"]) == 1 and len(info["pps"]) == 1
    assert info["pps"][0][0] & 0x1F == 8
    sps = parse_sps(info["sps"][0])
    assert sps["profile_idc"] == 66 and sps["constraints"] & 0x40
    assert (sps["width"], sps["height"]) == (vw, vh)

    samples = mp4_samples(data, info)
    assert len(samples) == frames
    assert [nal[0] & 0x1F for nal in samples[0]] == [5], "first sample must be an IDR slice"
    for nals in samples[1:]:
        assert [nal[0] & 0x1F for nal in nals] in ([1], [5])
    for nals in samples:
        for nal in nals:
            assert b"\x00\x00\x00" not in nal and b"\x00\x00\x01" not in nal
            assert b"\x00\x00\x02" not in nal, "missing emulation prevention"


def test_mp4_default_ratio() -> None:
    assert media.render_mp4(PROMPT, None) == media.render_mp4(PROMPT, "1:1")


@pytest.mark.parametrize("ratio", ["16:9", "9:16"])
def test_mp4_deterministic_and_prompt_dependent(ratio: str) -> None:
    first = media.render_mp4(PROMPT, ratio)
    assert media.render_mp4(PROMPT, ratio) == first
    others = {media.render_mp4(f"{PROMPT} #{i}", ratio) for i in range(5)}
    assert first not in others and len(others) == 5


@pytest.mark.parametrize("prompt", ["", "Ünïcödé 日本語 🚀", "a" * 5000])
def test_mp4_odd_prompts(prompt: str) -> None:
    for ratio in ("1:1", "21:9"):
        data = media.render_mp4(prompt, ratio)
        info = mp4_info(data)
        assert info["tkhd_size"] == tuple(v << 16 for v in media.video_size(ratio))
        assert len(data) < 200_000


def test_mp4_every_p_frame_codes_motion() -> None:
    """Not a still: the progress bar moves in every frame, so no P frame is all skipped."""
    data = media.render_mp4(PROMPT, "16:9")
    samples = mp4_samples(data, mp4_info(data))
    # A P slice that skips all 240 macroblocks is about 6 bytes; moving one macroblock row
    # codes 20 macroblocks of at least 5 bits each.
    assert all(len(nals[0]) > 12 for nals in samples[1:])
