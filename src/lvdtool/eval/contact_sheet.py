"""Contact sheets: a grid of thumbnails with captions, the picture a user checks by eye."""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Sequence

from PIL import Image, ImageDraw, ImageFont

from lvdtool.artifacts.atomic import atomic_path


def thumbnail(data: bytes | Image.Image, cell: int) -> Image.Image:
    img = data if isinstance(data, Image.Image) else Image.open(io.BytesIO(data))
    img = img.convert("RGB")
    img.thumbnail((cell, cell), Image.Resampling.BICUBIC)
    canvas = Image.new("RGB", (cell, cell), (32, 32, 32))
    canvas.paste(img, ((cell - img.width) // 2, (cell - img.height) // 2))
    return canvas


def contact_sheet(
    items: Sequence[tuple[bytes | Image.Image, str]],
    cell: int = 128,
    cols: int | None = None,
    title: str | None = None,
) -> Image.Image:
    """Lay out (image, caption) pairs in a grid; captions are drawn under each thumbnail."""
    n = max(1, len(items))
    cols = cols or min(n, 8)
    rows = math.ceil(n / cols)
    caption_h = 14
    title_h = 20 if title else 0
    sheet = Image.new("RGB", (cols * cell, title_h + rows * (cell + caption_h)), (16, 16, 16))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    if title:
        draw.text((4, 3), title, fill=(255, 255, 255), font=font)
    for i, (data, caption) in enumerate(items):
        r, c = divmod(i, cols)
        x, y = c * cell, title_h + r * (cell + caption_h)
        sheet.paste(thumbnail(data, cell), (x, y))
        text = caption if len(caption) <= cell // 6 else caption[: cell // 6 - 1] + "…"
        draw.text((x + 2, y + cell + 1), text, fill=(220, 220, 220), font=font)
    return sheet


def save_png(image: Image.Image, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
