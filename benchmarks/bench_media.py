"""Time mockgen.media.render_png / render_mp4 for every aspect ratio and print the output sizes.

Run from the repository root:  python benchmarks/bench_media.py [--runs 20] [--prompt TEXT]

Each run uses a different prompt (the prompt picks the pattern, colours and layout), so the
median and maximum cover the variety of outputs; sizes are for --prompt and the largest seen.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

try:
    from mockgen import media
except ImportError:  # not installed: use the checkout this script lives in
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from mockgen import media

DEFAULT_PROMPT = "a cat astronaut floating above a neon city at dusk, cinematic lighting"


def measure(render: Callable[[str, str | None], bytes], ratio: str, runs: int) -> tuple[float, float, float, int]:
    """Median and maximum wall time, median CPU time (ms) over runs, and the largest output.

    A different prompt is used for each run. CPU time is less disturbed by other processes.
    """
    wall: list[float] = []
    cpu: list[float] = []
    largest = 0
    for i in range(runs):
        prompt = f"benchmark prompt {i}: {DEFAULT_PROMPT[: 10 + 3 * i]}"
        start, start_cpu = time.perf_counter(), time.process_time()
        data = render(prompt, ratio)
        cpu.append((time.process_time() - start_cpu) * 1000)
        wall.append((time.perf_counter() - start) * 1000)
        largest = max(largest, len(data))
    return statistics.median(wall), max(wall), statistics.median(cpu), largest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="renders per ratio and format")
    parser.add_argument("--prompt", default=DEFAULT_PROMPT, help="prompt for the size column")
    args = parser.parse_args(argv)

    media.render_png(args.prompt, None)  # warm up imports and caches
    media.render_mp4(args.prompt, None)
    header = (
        f"{'ratio':>6} {'image':>10} {'png B':>7} {'max B':>7} {'med ms':>7} {'max ms':>7}"
        f" {'cpu ms':>7} | {'video':>8} {'mp4 B':>7} {'max B':>7} {'med ms':>7} {'max ms':>7}"
        f" {'cpu ms':>7}"
    )
    print(f"{args.runs} runs per cell, one prompt per run; B = bytes (--prompt, largest seen)")
    print(header)
    print("-" * len(header))
    for ratio in media.ASPECT_RATIOS:
        w, h = media.image_size(ratio)
        vw, vh = media.video_size(ratio)
        png_size = len(media.render_png(args.prompt, ratio))
        mp4_size = len(media.render_mp4(args.prompt, ratio))
        png_med, png_max, png_cpu, png_big = measure(media.render_png, ratio, args.runs)
        mp4_med, mp4_max, mp4_cpu, mp4_big = measure(media.render_mp4, ratio, args.runs)
        image, video = f"{w}x{h}", f"{vw}x{vh}"
        print(
            f"{ratio:>6} {image:>10} {png_size:>7} {png_big:>7} {png_med:>7.2f} {png_max:>7.2f}"
            f" {png_cpu:>7.2f} | {video:>8} {mp4_size:>7} {mp4_big:>7} {mp4_med:>7.2f}"
            f" {mp4_max:>7.2f} {mp4_cpu:>7.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
