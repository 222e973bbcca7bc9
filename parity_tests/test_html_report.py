"""index.html: failing rows first, every cell escaped, every picture a file of the folder;
and (slow) the page as a headless Chromium loads it."""

import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from parity import heatmaps, html_report, plots, reports, runner

HOSTILE = '<script>alert(1)</script> & "quotes"'  # a user-supplied message
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


class Page(HTMLParser):
    """What the tests read from a page: statuses of table#summary's rows in order, every
    <img> src, every tag name, and the text."""

    def __init__(self, text: str):
        super().__init__()
        self.statuses, self.images, self.tags, self.text = [], [], [], []
        self._table, self._status_cell = None, False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        if tag == "table":
            self._table = attrs.get("id")
        elif tag == "img":
            self.images.append(attrs.get("src"))
        elif tag == "span" and self._table == "summary":
            self._status_cell = attrs.get("class", "").startswith("status-")

    def handle_endtag(self, tag):
        if tag == "table":
            self._table = None

    def handle_data(self, data):
        self.text.append(data)
        if self._status_cell:
            self.statuses.append(data)
            self._status_cell = False


def _summary() -> pd.DataFrame:
    rows = [("PASS", "dense", "kernel"), ("FAIL", "conv2d", "output"),
            ("PASS", "dense", "bias"), ("INCONCLUSIVE", "dense", "input"),
            ("ERROR", "-", "-")]  # fmt: skip
    return pd.DataFrame([
        dict(check="forward", model="m", dtype="float64", layer=layer, quantity=quantity,
             status=status, worst_state="random", message=HOSTILE if status == "FAIL" else "ok")
        for status, layer, quantity in rows
    ])  # fmt: skip


def _report(tmp_path) -> Path:
    """A report folder through reports.write_report: a failing spatial row with its
    heatmap, a diagnosis, and the training plots."""
    diff = np.zeros((2, 6, 6, 3))
    diff[1, 2, 4, 2] = 0.5
    row = dict(check="forward", model="m", dtype="float64", state="random", layer="conv2d",
               quantity="output")  # fmt: skip
    diagnosis = pd.DataFrame([dict(model="m", layer="conv2d", signature="true convolution",
                                   advice=HOSTILE)])  # fmt: skip
    results = runner.Results({"summary": _summary(), "diagnosis": diagnosis},
                             heatmaps=[heatmaps.heatmap_of(row, diff, 0 * diff)])  # fmt: skip
    steps = np.arange(40)
    training = pd.DataFrame(dict(
        model="m", dtype="float64", keras_path="epoch", epoch=steps // 20 + 1,
        step=steps % 20 + 1, global_step=steps + 1, abs_diff=1e-15, scratch_loss=2.3,
        keras_loss=2.3,
    ))  # fmt: skip
    writer = lambda folder: plots.write_training_plots(training, folder)  # noqa: E731
    return reports.write_report(results, tmp_path, run_id="r", extra_writers=[writer])


def test_failing_rows_come_first_worst_first_in_file_order_within_a_status():
    ordered = html_report.failing_first(_summary())
    assert list(ordered.status) == ["ERROR", "FAIL", "INCONCLUSIVE", "PASS", "PASS"]
    assert list(ordered.layer[ordered.status == "PASS"]) == ["dense", "dense"]
    assert list(ordered.quantity[ordered.status == "PASS"]) == ["kernel", "bias"]


def _check_page(page: Page, folder: Path) -> None:
    """The assertions shared by the file test and the browser test."""
    assert page.statuses == ["ERROR", "FAIL", "INCONCLUSIVE", "PASS", "PASS"]
    assert "script" not in page.tags and HOSTILE in "".join(page.text)  # escaped, shown
    assert page.images and all((folder / src).is_file() for src in page.images)
    assert sorted(page.images) == sorted(p.name for p in folder.glob("*.png"))
    assert page.images[0] == "heatmap_forward_m_float64_conv2d_output.png"  # heatmaps first
    assert "true convolution" in "".join(page.text)  # the diagnosis


def test_index_shows_failing_rows_first_escaped_cells_and_existing_pictures(tmp_path):
    folder = _report(tmp_path)
    _check_page(Page((folder / "index.html").read_text(encoding="utf-8")), folder)


def test_the_failing_spatial_row_links_its_heatmap(tmp_path):
    text = (_report(tmp_path) / "index.html").read_text(encoding="utf-8")
    assert text.count('<a href="heatmap_forward_m_float64_conv2d_output.png">heatmap</a>') == 1


def test_a_report_without_statuses_still_gets_a_page(tmp_path):
    folder = reports.write_report(runner.Results({"summary": pd.DataFrame({"x": [0.1]})}),
                                  tmp_path, run_id="r")  # fmt: skip
    page = Page((folder / "index.html").read_text(encoding="utf-8"))
    assert page.statuses == [] and page.images == [] and "summary.csv" in page.text


# -- in a headless browser (slow: starts Chromium) ----------------------------------------


def _browser() -> str:
    found = next((b for b in map(shutil.which, BROWSERS) if b), None)
    if found is None:
        pytest.skip(f"no headless browser on PATH (looked for {', '.join(BROWSERS)})")
    return found


def _chromium(browser: str, tmp_path: Path, *args: str) -> str:
    command = [browser, "--headless", "--disable-gpu", "--no-sandbox",
               f"--user-data-dir={tmp_path / 'profile'}", *args]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.slow
def test_index_html_in_a_headless_browser(tmp_path):
    browser = _browser()
    folder = _report(tmp_path)
    url = (folder / "index.html").as_uri()
    _check_page(Page(_chromium(browser, tmp_path, "--dump-dom", url)), folder)
    shot = tmp_path / "index.png"
    _chromium(browser, tmp_path, "--window-size=1280,2000", f"--screenshot={shot}", url)
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)
    assert shot.stat().st_size > 30_000 and len(np.unique(pixels.reshape(-1, pixels.shape[-1]),
                                                           axis=0)) > 100  # fmt: skip
