"""Generated data for the hard benchmark models: rendered text lines and rendered glyphs, no download.

Both render with the TrueType fonts that ship inside matplotlib (DejaVu Sans/Serif/Mono in four styles, STIX,
Computer Modern: :func:`fonts`) through Pillow, then degrade the image: random size, position, rotation,
stroke contrast, background gradient, Gaussian blur, pixel noise, and (glyphs) occluding bars. Every sample
is drawn from a ``numpy.random.Generator`` seeded by the caller, so a split is reproducible from its seed;
train, calibration and test splits use disjoint seeds (and, for text, strings never shared between them with
overwhelming probability).

- :func:`text_lines`: ``(N, 1, 32, 128)`` float32 in [-1, 1] and the strings (4-10 characters of
  :data:`TEXT_ALPHABET`); :func:`encode_labels` pads them for CTC.
- :func:`glyphs`: ``(N, 1, 32, 32)`` float32 in [-1, 1] and labels in ``range(len(GLYPH_CLASSES))``; the
  classes include confusable shapes (O/0/Q, I/1/l... are distinct classes), so a good model stays below 100%.
"""

from __future__ import annotations

import string
from functools import cache, lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

TEXT_ALPHABET = string.digits + string.ascii_letters + "-.,:'&"   # CTC class i+1 is TEXT_ALPHABET[i]; 0 = blank
GLYPH_CLASSES = string.digits + string.ascii_uppercase + "abdefghnqrt"      # 47 classes
LINE_HEIGHT, LINE_WIDTH = 32, 128
GLYPH_SIZE = 32
_FONT_FILES = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique.ttf",
               "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSerif-BoldItalic.ttf",
               "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSansMono-Oblique.ttf",
               "STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf", "cmr10.ttf", "cmss10.ttf",
               "cmtt10.ttf", "cmb10.ttf")


@cache
def fonts() -> tuple[Path, ...]:
    """The TrueType files of matplotlib's own fonts (installed with matplotlib; no system fonts used)."""
    import matplotlib

    folder = Path(matplotlib.__file__).parent / "mpl-data" / "fonts" / "ttf"
    found = tuple(folder / f for f in _FONT_FILES if (folder / f).is_file())
    if len(found) < 8:
        raise RuntimeError(f"matplotlib's fonts not found under {folder}")
    return found


@lru_cache(maxsize=4096)
def _font(path: Path, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(path), size)


def _degrade(img: Image.Image, rng: np.random.Generator, blur: float) -> np.ndarray:
    """Blur, contrast, gradient background and noise; returns float32 in [-1, 1]."""
    if blur > 0:
        img = img.filter(ImageFilter.GaussianBlur(blur))
    a = np.asarray(img, dtype=np.float32) / 255.0                # ink = 1, paper = 0
    h, w = a.shape
    paper = rng.uniform(0.0, 0.45) + rng.uniform(-0.15, 0.15) * np.linspace(0, 1, w)[None, :] \
        + rng.uniform(-0.1, 0.1) * np.linspace(0, 1, h)[:, None]
    ink_level = paper + rng.uniform(0.3, 0.9)
    x = paper + a * (ink_level - paper)
    x = x + rng.normal(0, rng.uniform(0.02, 0.12), x.shape)
    if rng.random() < 0.5:
        x = 1.0 - x                                               # light text on dark paper
    return (np.clip(x, 0, 1) * 2 - 1).astype(np.float32)


def _render_line(text: str, rng: np.random.Generator) -> np.ndarray:
    font_path = fonts()[rng.integers(len(fonts()))]
    size = int(rng.integers(16, 25))
    font = _font(font_path, size)
    left, top, right, bottom = font.getbbox(text)
    width = right - left
    scale = min(1.0, (LINE_WIDTH - 4) / max(width, 1))
    canvas = Image.new("L", (max(width + 8, LINE_WIDTH), LINE_HEIGHT + 16), 0)
    ImageDraw.Draw(canvas).text((4 - left, 8 + (LINE_HEIGHT - (bottom - top)) // 2 - top + int(rng.integers(-2, 3))),
                                text, fill=255, font=font)
    if scale < 1.0:
        canvas = canvas.resize((max(1, int(canvas.width * scale)), canvas.height), Image.BILINEAR)
    angle = rng.uniform(-2.5, 2.5)
    canvas = canvas.rotate(angle, resample=Image.BILINEAR)
    line = Image.new("L", (LINE_WIDTH, LINE_HEIGHT), 0)
    x0 = int(rng.integers(0, max(1, LINE_WIDTH - min(canvas.width, LINE_WIDTH) + 1)))
    line.paste(canvas.crop((0, 8, min(canvas.width, LINE_WIDTH), 8 + LINE_HEIGHT)), (x0, 0))
    return _degrade(line, rng, rng.uniform(0, 1.1))


def random_text(rng: np.random.Generator, low: int = 4, high: int = 10) -> str:
    n = int(rng.integers(low, high + 1))
    kind = rng.random()
    if kind < 0.2:                                                # a number, a date, a code
        pool = string.digits + "-.:"
    elif kind < 0.4:                                              # a word-like lowercase string
        pool = string.ascii_lowercase
    else:
        pool = TEXT_ALPHABET
    return "".join(pool[i] for i in rng.integers(len(pool), size=n))


def text_lines(n: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """``n`` rendered lines ``(n, 1, 32, 128)`` and their strings."""
    rng = np.random.default_rng(seed)
    texts = [random_text(rng) for _ in range(n)]
    images = np.stack([_render_line(t, rng) for t in texts])[:, None]
    return images, texts


def encode_labels(texts: list[str], max_len: int = 10) -> np.ndarray:
    """Strings as ``(N, max_len)`` int64 CTC targets (class = alphabet index + 1), padded with -1."""
    out = np.full((len(texts), max_len), -1, dtype=np.int64)
    for i, t in enumerate(texts):
        out[i, :len(t)] = [TEXT_ALPHABET.index(c) + 1 for c in t]
    return out


def decode_labels(labels: np.ndarray) -> list[str]:
    return ["".join(TEXT_ALPHABET[c - 1] for c in row if c > 0) for row in labels]


def _render_glyph(cls: int, rng: np.random.Generator) -> np.ndarray:
    font = _font(fonts()[rng.integers(len(fonts()))], int(rng.integers(16, 27)))
    ch = GLYPH_CLASSES[cls]
    big = GLYPH_SIZE * 2
    canvas = Image.new("L", (big, big), 0)
    left, top, right, bottom = font.getbbox(ch)
    cx, cy = big // 2 + rng.integers(-4, 5), big // 2 + rng.integers(-4, 5)
    ImageDraw.Draw(canvas).text((cx - (left + right) // 2, cy - (top + bottom) // 2), ch, fill=255, font=font)
    canvas = canvas.rotate(rng.uniform(-18, 18), resample=Image.BILINEAR, center=(big // 2, big // 2))
    # random anisotropic scale, then the centre crop
    sx, sy = rng.uniform(0.75, 1.25), rng.uniform(0.75, 1.25)
    canvas = canvas.resize((int(big * sx), int(big * sy)), Image.BILINEAR)
    x0, y0 = (canvas.width - GLYPH_SIZE) // 2, (canvas.height - GLYPH_SIZE) // 2
    glyph = canvas.crop((x0, y0, x0 + GLYPH_SIZE, y0 + GLYPH_SIZE))
    if rng.random() < 0.5:                                        # an occluding bar or a stray stroke
        draw = ImageDraw.Draw(glyph)
        x, y = rng.integers(0, GLYPH_SIZE, 2)
        w, h = (int(rng.integers(2, 6)), int(rng.integers(8, 20))) if rng.random() < 0.5 else \
            (int(rng.integers(8, 20)), int(rng.integers(2, 6)))
        draw.rectangle((x, y, x + w, y + h), fill=int(rng.choice([0, 255])))
    return _degrade(glyph, rng, rng.uniform(0, 1.4))


def glyphs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` rendered glyphs ``(n, 1, 32, 32)`` and their class labels (balanced, shuffled)."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % len(GLYPH_CLASSES)).astype(np.int64)
    return np.stack([_render_glyph(int(c), rng) for c in labels])[:, None], labels
