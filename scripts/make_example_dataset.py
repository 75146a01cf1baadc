"""Draw the example data set: synthetic circuit boards, each with exactly one abnormal part.

    python scripts/make_example_dataset.py [--out examples/circuit-boards]

Writes `images/case1.png` ... `images/case12.png` and `annotations.json` in the layout of the
guide relaytune follows: {"case1.png": {"question": ..., "answer": "the bulging capacitor, top
right"}}. Seeded: the same Pillow gives the same bytes on every run.
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageDraw

SEED = 20261128
CASES = 12
SIZE = 128
QUESTION = "Which part is abnormal?"
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "examples" / "circuit-boards"

BOARD = (24, 104, 52)
TRACE = (58, 150, 84)
PAD = (196, 170, 92)
SILK = (226, 232, 220)

# Where a part can sit, named as the answers name it.
SLOTS = {
    "top left": (32, 32),
    "top right": (96, 32),
    "bottom left": (32, 96),
    "bottom right": (96, 96),
    "center": (64, 64),
}

Point = tuple[int, int]
Painter = Callable[[ImageDraw.ImageDraw, Point, random.Random], None]


def draw_capacitor(draw: ImageDraw.ImageDraw, at: Point, rng: random.Random) -> None:
    x, y = at
    r = rng.choice((9, 10, 11))
    draw.ellipse((x - r, y - r, x + r, y + r), fill=(40, 70, 150), outline=(20, 30, 60))
    draw.ellipse((x - r + 3, y - r + 3, x + r - 3, y + r - 3), fill=(182, 188, 196))
    draw.line((x - 4, y, x + 4, y), fill=(120, 124, 130))  # the flat vent of a healthy cap
    draw.line((x, y - 4, x, y + 4), fill=(120, 124, 130))


def draw_bulging_capacitor(draw: ImageDraw.ImageDraw, at: Point, rng: random.Random) -> None:
    x, y = at
    r = 13
    draw.ellipse((x - r, y - r, x + r, y + r), fill=(150, 30, 24), outline=(70, 10, 10))
    draw.ellipse((x - 8, y - 8, x + 8, y + 8), fill=(214, 86, 60))  # the domed, split top
    draw.ellipse((x - 4, y - 6, x + 1, y - 2), fill=(246, 190, 160))
    draw.line((x - 6, y + 5, x + 6, y - 5), fill=(60, 8, 8), width=2)
    draw.ellipse((x + 6, y + 8, x + 12, y + 13), fill=(120, 90, 40))  # leaked electrolyte


def draw_resistor(draw: ImageDraw.ImageDraw, at: Point, rng: random.Random) -> None:
    x, y = at
    horizontal = rng.random() < 0.5
    body = (x - 11, y - 4, x + 11, y + 4) if horizontal else (x - 4, y - 11, x + 4, y + 11)
    for lead in _resistor_leads(at, horizontal):
        draw.line(lead, fill=(170, 170, 170), width=2)
    draw.rectangle(body, fill=(214, 190, 140), outline=(120, 100, 70))
    colours = [(140, 70, 20), (20, 20, 20), (200, 40, 30), (230, 140, 20), (200, 170, 40)]
    for i, offset in enumerate((-6, -2, 2)):
        colour = rng.choice(colours) if i < 2 else (200, 170, 40)
        band = (
            (x + offset, y - 4, x + offset + 1, y + 4)
            if horizontal
            else (x - 4, y + offset, x + 4, y + offset + 1)
        )
        draw.rectangle(band, fill=colour)


def draw_cracked_resistor(draw: ImageDraw.ImageDraw, at: Point, rng: random.Random) -> None:
    x, y = at
    for lead in _resistor_leads(at, horizontal=True):
        draw.line(lead, fill=(170, 170, 170), width=2)
    draw.rectangle((x - 12, y - 5, x + 12, y + 5), fill=(70, 44, 30), outline=(30, 18, 12))
    draw.line((x - 3, y - 5, x + 1, y, x - 2, y + 5), fill=(10, 6, 4), width=2)  # the crack
    draw.ellipse((x + 3, y - 3, x + 9, y + 3), fill=(34, 24, 18))  # scorched end


def draw_chip(draw: ImageDraw.ImageDraw, at: Point, rng: random.Random) -> None:
    x, y = at
    half = rng.choice((10, 11, 12))
    for step in range(-half + 3, half - 1, 4):
        draw.line((x - half - 3, y + step, x + half + 3, y + step), fill=(176, 176, 180))
    draw.rectangle((x - half, y - half, x + half, y + half), fill=(32, 32, 36), outline=(8, 8, 8))
    draw.ellipse((x - half + 2, y - half + 2, x - half + 5, y - half + 5), fill=(90, 90, 96))
    draw.line((x - 5, y, x + 5, y), fill=SILK)


def draw_burnt_chip(draw: ImageDraw.ImageDraw, at: Point, rng: random.Random) -> None:
    x, y = at
    draw.ellipse((x - 18, y - 16, x + 17, y + 18), fill=(78, 52, 20))  # scorched board
    draw.ellipse((x - 14, y - 12, x + 13, y + 14), fill=(46, 30, 12))
    for step in range(-8, 10, 4):
        draw.line((x - 15, y + step, x + 15, y + step), fill=(96, 70, 50))
    draw.rectangle((x - 12, y - 12, x + 12, y + 12), fill=(14, 10, 8), outline=(0, 0, 0))
    draw.line((x - 8, y - 6, x + 2, y + 2, x + 8, y - 2), fill=(120, 60, 20), width=2)
    draw.ellipse((x - 3, y + 3, x + 5, y + 10), fill=(170, 90, 30))  # molten spot


def _resistor_leads(at: Point, horizontal: bool) -> list[tuple[int, int, int, int]]:
    x, y = at
    if horizontal:
        return [(x - 16, y, x - 11, y), (x + 11, y, x + 16, y)]
    return [(x, y - 16, x, y - 11), (x, y + 11, x, y + 16)]


NORMAL: dict[str, Painter] = {
    "capacitor": draw_capacitor,
    "resistor": draw_resistor,
    "chip": draw_chip,
}
# The abnormal form of each kind of part, and the words the answer uses for it.
DEFECTS: dict[str, tuple[str, Painter]] = {
    "capacitor": ("the bulging capacitor", draw_bulging_capacitor),
    "resistor": ("the cracked resistor", draw_cracked_resistor),
    "chip": ("the burnt chip", draw_burnt_chip),
}


def draw_board(draw: ImageDraw.ImageDraw, rng: random.Random) -> None:
    draw.rectangle((0, 0, SIZE - 1, SIZE - 1), fill=BOARD, outline=(12, 60, 28))
    for _ in range(7):
        x0, y0 = rng.randrange(4, SIZE - 4), rng.randrange(4, SIZE - 4)
        x1, y1 = rng.randrange(4, SIZE - 4), rng.randrange(4, SIZE - 4)
        draw.line((x0, y0, x1, y0, x1, y1), fill=TRACE, width=2)  # right-angled traces
        draw.ellipse((x1 - 2, y1 - 2, x1 + 2, y1 + 2), fill=PAD)
    for x, y in ((64, 5), (5, 64), (122, 64), (64, 122)):
        draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=PAD, outline=(150, 120, 60))


def draw_case(defect_slot: str, defect_kind: str, rng: random.Random) -> tuple[Image.Image, str]:
    image = Image.new("RGB", (SIZE, SIZE), BOARD)
    draw = ImageDraw.Draw(image)
    draw_board(draw, rng)
    words, draw_defect = DEFECTS[defect_kind]
    for slot, (x, y) in SLOTS.items():
        at = (x + rng.randint(-3, 3), y + rng.randint(-3, 3))
        painter = draw_defect if slot == defect_slot else NORMAL[rng.choice(sorted(NORMAL))]
        painter(draw, at, rng)
    return image, f"{words}, {defect_slot}"


def generate(out_dir: Path, *, seed: int = SEED, cases: int = CASES) -> dict[str, dict[str, str]]:
    """Write the images and annotations.json under `out_dir`; return the annotations."""
    rng = random.Random(seed)
    # Every defect at a different (position, kind) pair: no two cases ask the same thing.
    pairs = [(slot, kind) for slot in SLOTS for kind in sorted(DEFECTS)]
    chosen = rng.sample(pairs, cases)
    images_dir = out_dir / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    annotations = {}
    for number, (slot, kind) in enumerate(chosen, start=1):
        image, answer = draw_case(slot, kind, rng)
        name = f"case{number}.png"
        image.save(images_dir / name, format="PNG", optimize=True)
        annotations[name] = {"question": QUESTION, "answer": answer}
    text = json.dumps(annotations, indent=2, ensure_ascii=False) + "\n"
    (out_dir / "annotations.json").write_text(text, encoding="utf-8")
    return annotations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the data set folder")
    args = parser.parse_args()
    annotations = generate(args.out)
    print(f"wrote {len(annotations)} cases to {args.out}")


if __name__ == "__main__":
    main()
