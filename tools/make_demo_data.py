"""Copy a competition folder into the project with its images shrunk, so a clone works offline.

Usage: python tools/make_demo_data.py SRC DST [--max-side 384] [--quality 90]

JPEGs are resized so the longest side is at most --max-side and re-encoded; files that are
not really JPEGs (the GIF named .jpg in ants-bees) are copied byte for byte, because the
pipeline's reader must cope with them as users will meet them.
"""

import argparse
import shutil
from pathlib import Path

from PIL import Image, ImageOps


def shrink(src: Path, dst: Path, max_side: int, quality: int) -> str:
    with Image.open(src) as im:
        if im.format != "JPEG":
            shutil.copyfile(src, dst)
            return f"copied as is ({im.format})"
        im = ImageOps.exif_transpose(im).convert("RGB")
        im.thumbnail((max_side, max_side), Image.LANCZOS)
        im.save(dst, "JPEG", quality=quality)
        return "shrunk"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", type=Path)
    ap.add_argument("dst", type=Path)
    ap.add_argument("--max-side", type=int, default=384)
    ap.add_argument("--quality", type=int, default=90)
    args = ap.parse_args()
    for path in sorted(args.src.rglob("*")):
        out = args.dst / path.relative_to(args.src)
        if path.is_dir():
            out.mkdir(parents=True, exist_ok=True)
        elif path.suffix.lower() in {".jpg", ".jpeg", ".png"}:
            out.parent.mkdir(parents=True, exist_ok=True)
            how = shrink(path, out, args.max_side, args.quality)
            if how != "shrunk":
                print(f"{path}: {how}")
        else:
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, out)


if __name__ == "__main__":
    main()
