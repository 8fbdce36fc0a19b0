"""Reading report.html back as a browser would: its visible text and its embedded PNGs (test helper)."""

from __future__ import annotations

import base64
import re
from html.parser import HTMLParser


class PageText(HTMLParser):
    """The text a browser shows (outside <style>/<title>), and every <img>'s attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self.images: list[dict[str, str]] = []
        self.tags: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag in ("style", "title", "script"):
            self._skip += 1
        if tag == "img":
            self.images.append({k: v or "" for k, v in attrs})

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "title", "script"):
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)

    @property
    def text(self) -> str:
        return " ".join(" ".join(self.parts).split())


def read_page(page: str) -> PageText:
    parser = PageText()
    parser.feed(page)
    return parser


def decoded_pngs(page: PageText) -> list[bytes]:
    """The bytes of every data:image/png <img> of the page."""
    out = []
    for img in page.images:
        m = re.fullmatch(r"data:image/png;base64,([A-Za-z0-9+/=]+)", img["src"])
        assert m, f"an <img> whose src is not an embedded PNG: {img['src'][:80]!r}"
        out.append(base64.b64decode(m.group(1), validate=True))
    return out
