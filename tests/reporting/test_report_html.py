"""report.html: report.md as one page with its figures inside (sweep.reporting.html), on hand-built markdown."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from report_page import decoded_pngs, read_page

from sweep.reporting.html import markdown_to_html, write_report_files


def save_png(path: Path, width: int, height: int) -> bytes:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(path)
    return path.read_bytes()


REPORT = """# Does dropout regularize? Report for `demo`

keep_prob is the probability of KEEPING a unit.

## Ablation `ablation-1`
Configuration: hidden 64, lr 1e-3 <b>not a tag</b> & more.

### Verdict

In short (4 comparisons, counting only differences that survive Holm correction): keep **0.25** hurt.

- Dropout helped in 0 of 4 comparisons.
- Dropout hurt in 1 of 4 comparisons: keep 0.25 at 100 examples (−5.3).

![learning curves](figures/ablation-1/learning_curves.png)
![gap](figures/gap.png)
![gone](figures/missing.png)
![outside](../secret.png)

### Numbers

| size | keep_prob | p (t, Holm) |
| --- | --- | --- |
| 100 | 0.25 | <0.001 |
| 1,000 | 1 | a \\| b |
"""


def test_the_page_has_the_reports_text_tables_and_its_own_figures_embedded(tmp_path: Path) -> None:
    folder = tmp_path / "report"
    curves = save_png(folder / "figures" / "ablation-1" / "learning_curves.png", 400, 300)
    gap = save_png(folder / "figures" / "gap.png", 320, 200)
    save_png(tmp_path / "secret.png", 10, 10)  # outside the report's folder: never embedded
    md, html_path = write_report_files(folder, REPORT)
    assert md.read_text(encoding="utf-8") == REPORT
    page = read_page(html_path.read_text(encoding="utf-8"))

    assert decoded_pngs(page) == [curves, gap]  # in the report's order, byte for byte
    assert [img["alt"] for img in page.images] == ["learning curves", "gap"]
    assert "[figure figures/missing.png missing: gone]" in page.text
    assert "[figure ../secret.png missing: outside]" in page.text
    # Text, escaped (no element from the report's words), lists, headings and the table's cells.
    assert "Configuration: hidden 64, lr 1e-3 <b>not a tag</b> & more." in page.text
    assert "b" not in page.tags and "script" not in page.tags
    assert page.tags.count("li") == 2 and page.tags.count("h3") == 2 and "h1" in page.tags
    assert "keep 0.25 at 100 examples (−5.3)" in page.text
    assert page.tags.count("th") == 3 and page.tags.count("tr") == 3 and page.tags.count("td") == 6
    assert "| 100 |" not in page.text and "<0.001" in page.text and "a | b" in page.text
    assert "**" not in page.text and "`" not in page.text


def test_inline_markup_bold_and_code_but_not_inside_code() -> None:
    page = markdown_to_html("Run `sweep report` then a lone ` stays.\n", Path("."))
    assert "<code>" not in page and "Run `sweep report` then a lone ` stays." in page  # unmatched: literal
    page = markdown_to_html("Run `sweep **report**` then **read** it.\n", Path("."))
    assert "<code>sweep **report**</code> then <strong>read</strong> it." in page


@pytest.mark.parametrize("line", ["Paragraph one\nstill one", "- item", "| a |\n|---|\n| 1 |", "## Heading"])
def test_every_block_kind_keeps_its_words(line: str) -> None:
    page = read_page(markdown_to_html(line + "\n", Path(".")))
    words = re.findall(r"[A-Za-z0-9]+", line)
    assert re.findall(r"[A-Za-z0-9]+", page.text) == words
