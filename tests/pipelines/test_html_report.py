"""The HTML report writer: every string escaped, nothing outside the page, images as data URIs,
tables with their rows; and a page rendered in headless Chromium is not blank (skipped, with its
reason, where no Chromium is installed: ``make setup`` installs the Debian package)."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess

import numpy as np
import pytest

from deepshrink.pipelines.html_report import Image, Summary, Table, Text, render_html, write_html_report

EVIL = '<script>alert("x")</script>&"\'><img src=x onerror=alert(1)>'
MAGENTA = (255, 0, 255)      # a colour only the embedded image has: seen in the screenshot, the image rendered
HEADER_BLUE = (0x2F, 0x6F, 0xB0)   # the table headers' background in the page's CSS
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def _png(color: str = "#ff00ff", size: tuple[float, float] = (3, 2)) -> bytes:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=size)
    ax.bar([0, 1, 2], [3, 1, 2], color=color)
    ax.set_title("synthetic")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=60)
    plt.close(fig)
    return buf.getvalue()


@pytest.fixture(scope="module")
def pngs(tmp_path_factory):
    root = tmp_path_factory.mktemp("png")
    (root / "a.png").write_bytes(_png())
    (root / "b.png").write_bytes(_png("#2ca02c", (4, 2)))
    return root / "a.png", root / "b.png"


def _sections(pngs) -> list:
    return [Summary([("model", "`lenet<5>.safetensors`"), ("ratio", 39.5), ("accuracy", None)], heading="Run"),
            Text("Notes", ["The **sparsity** is the fraction of zeros; see `FORMAT.md`."], ["one", "two"]),
            Table(["layer", "sparsity", "bits"], [["fc1.weight", "92.00%", 5], ["fc2.weight", "91.00%", 5],
                                                   ["total", "91.90%", None]],
                  heading="Per-layer table", caption="File: 1,234 bytes", legend=["**bits**: code width"]),
            Image(pngs[0], "magenta bars", heading="Plot", caption="a.png"),
            Image(pngs[1].read_bytes(), "green bars")]


def test_every_string_is_escaped(pngs):
    page = render_html(EVIL, [Text(EVIL, [EVIL], [EVIL]), Table([EVIL], [[EVIL]], heading=EVIL, caption=EVIL,
                                                                  legend=[EVIL]),
                              Summary([(EVIL, EVIL)], heading=EVIL), Image(pngs[0], EVIL, heading=EVIL, caption=EVIL)])
    assert "<script" not in page and "onerror=alert(1)>" not in page and "<img src=x" not in page
    assert page.count("&lt;script&gt;") >= 10
    # the alt attribute cannot be closed by a quote in the string
    assert re.search(r'alt="&lt;script&gt;alert\(&quot;x&quot;\)', page)


def test_bold_and_code_are_applied_after_escaping():
    page = render_html("t", [Text(paragraphs=["a **<b>** and `<i>` and **x**"])])
    assert "<p>a <strong>&lt;b&gt;</strong> and <code>&lt;i&gt;</code> and <strong>x</strong></p>" in page


def test_the_page_is_self_contained_and_embeds_the_images(pngs, tmp_path):
    path = write_html_report(tmp_path / "r.html", "Report", _sections(pngs))
    page = path.read_text(encoding="utf-8")
    for external in ('src="http', "href=", "url(", "@import", "<link", "<script", "://"):
        assert external not in page, external
    uris = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert [base64.b64decode(u) for u in uris] == [p.read_bytes() for p in pngs]
    assert page.count("<img") == 2


def test_tables_have_their_rows_and_cells(pngs):
    page = render_html("t", _sections(pngs))
    assert page.count("<tr>") == 4 and page.count("<th>") == 3
    assert "<tr><td>fc1.weight</td><td class=\"num\">92.00%</td><td class=\"num\">5</td></tr>" in page
    assert "<td>total</td>" in page and "<td>--</td>" in page              # None shows as --
    assert "<caption>File: 1,234 bytes</caption>" in page
    assert '<p class="legend"><strong>bits</strong>: code width</p>' in page
    assert "<dt>ratio</dt><dd>39.5</dd>" in page and "<dt>accuracy</dt><dd>--</dd>" in page
    assert "<li>one</li>" in page and "<code>lenet&lt;5&gt;.safetensors</code>" in page


def test_a_file_that_is_no_image_is_refused(tmp_path):
    (tmp_path / "x.png").write_text("not a png")
    with pytest.raises(ValueError, match="x.png: not a PNG"):
        render_html("t", [Image(tmp_path / "x.png", "x")])
    with pytest.raises(TypeError, match="not a report section"):
        render_html("t", ["just a string"])


def test_written_atomically_over_an_old_page(pngs, tmp_path):
    path = tmp_path / "sub" / "r.html"
    write_html_report(path, "old", [])
    assert write_html_report(path, "new", _sections(pngs)) == path
    assert "<title>new</title>" in path.read_text() and [p.name for p in path.parent.iterdir()] == ["r.html"]


def _chromium(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
                           f"--user-data-dir={cwd / 'profile'}", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on PATH (make setup installs the Debian package chromium)")
def test_the_page_renders_in_headless_chromium_and_is_not_blank(pngs, tmp_path):
    from PIL import Image as PILImage

    path = write_html_report(tmp_path / "r.html", "Report of <lenet>", _sections(pngs))
    shot = tmp_path / "shot.png"
    run = _chromium(f"--screenshot={shot}", "--window-size=1000,1400", path.as_uri(), cwd=tmp_path)
    assert shot.is_file(), run.stderr[-2000:]
    img = np.asarray(PILImage.open(shot).convert("RGB"))                  # (H, W, 3)
    assert img.shape == (1400, 1000, 3)
    colors, counts = np.unique(img.reshape(-1, 3), axis=0, return_counts=True)
    background = colors[counts.argmax()]
    assert (img != background).any(axis=2).mean() > 0.02                    # text, tables, plots: not blank
    assert len(colors) > 100                                                 # many colours, not one flat fill
    assert (img == MAGENTA).all(axis=2).sum() > 500                         # the embedded image was drawn
    assert (img == HEADER_BLUE).all(axis=2).sum() > 500                     # the inline CSS applied

    dom = _chromium("--dump-dom", path.as_uri(), cwd=tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "fc1.weight" in dom.stdout and "92.00%" in dom.stdout and "Report of &lt;lenet&gt;" in dom.stdout
    assert dom.stdout.count('src="data:image/png;base64,') == 2
