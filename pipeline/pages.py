"""Self-contained HTML pages (the run report, the ensemble report): every image inline as a PNG,
no script, no fetch, so a page opens offline and can be attached to a discussion post."""

from __future__ import annotations

import base64
import html

import pandas as pd

STYLE = """body{font-family:sans-serif;margin:2em;max-width:1100px}table.t{border-collapse:collapse;margin:.5em 0}
.t td,.t th{border:1px solid #ccc;padding:2px 8px;text-align:right}.grid{display:flex;flex-wrap:wrap;gap:8px}
figure{margin:0;font-size:11px;width:120px}pre{background:#f6f6f6;padding:1em;font-size:11px;overflow:auto}"""


def esc(text) -> str:
    return html.escape(str(text))


def img_tag(png: bytes, alt: str) -> str:
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def table(df: pd.DataFrame) -> str:
    return df.to_html(index=False, float_format=lambda v: f"{v:.4f}", border=0, classes="t")


def page(title: str, parts: list[str]) -> str:
    head = f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title><style>{STYLE}</style>"
    return f"{head}</head><body>{''.join(parts)}</body></html>\n"
