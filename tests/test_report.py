"""`vmm report`: the HTML report of the sample's index, opened in headless Chromium (Debian's
`chromium`, driven by Playwright for Python; `.ci/run` installs it), plus its pure parts.

The index: the 3-video sample plus a hostile entry (an id that climbs out of folders and a title
that is markup) whose file is deleted after extraction, so its page must say why it has no
pictures. Extracted with random CLIP weights (`--clip-pretrained none`) for the banner.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipelines import report_html as rh
from pipelines.report import ReportError, build_report, safe_name
from tests.conftest import TINY_MODEL, import_or_missing, missing_prerequisite

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
HOSTILE_ID = '../../x"><script>window.__pwned=1</script>'
HOSTILE_TITLE = '<img src=x onerror="window.__pwned=1"> & </table>'


def _rgb(hex_color: str) -> str:
    r, g, b = (int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgb({r}, {g}, {b})"


def _squash(text):
    return re.sub(r"[^0-9a-z]", "", (text or "").lower())


def _rows(out, table):
    folder = os.path.join(out, table)
    return [r for name in sorted(os.listdir(folder)) if name.endswith(".parquet")
            for r in pq.read_table(os.path.join(folder, name)).to_pylist()]


# ---------------------------------------------------------------------------------------------
# Pure parts


@pytest.mark.parametrize("video_id", [HOSTILE_ID, "../../x", "..", ".", "", "a/b\\c", "<script>", "名前", "x" * 500])
def test_safe_name_stays_in_the_folder(video_id):
    name = safe_name(video_id)
    assert re.fullmatch(r"[A-Za-z0-9_-]+-[0-9a-f]{12}", name) and len(name) <= 53
    assert safe_name(video_id) == name and safe_name(video_id + " ") != name


def test_markup_escapes_every_index_value():
    video = {"video_id": HOSTILE_ID, "title": HOSTILE_TITLE, "uri": "<u>", "width": 4, "height": 4,
             "ocr_subtitle_text": "<b>a</b>\n&lt;", "stage_errors": [{"stage": "<s>", "error_type": "<e>",
                                                                       "message": "<m>"}]}
    frames = [{"frame_index": 0, "timestamp_s": 0.0, "reason": "<r>", "token": None,
               "ocr": [{"text": "<t>", "score": 0.9, "box": [0, 0, 1, 0, 1, 1, 0, 1], "domain": "<d>"}]}]
    page = rh.video_page(video=video, frames=frames, segments=[{"start_s": 0.0, "end_s": 1.0, "text": "<w>"}],
                         thumbs={}, no_pictures="<why>", metadata={"vmm.clip_weights": "<c>"}, index_href="../index.html")
    for raw in ("<script>", "<img", "<b>", "<t>", "<d>", "<w>", "<why>", "<s>", "<m>", "<u>", "<r>"):
        assert raw not in page
    assert "&lt;script&gt;" in page and "&amp;lt;" in page


def test_histogram_counts_every_value_once():
    svg = rh.histogram_svg([-1.0, -0.99, 0.0, 0.5, 1.0, 2.0, None], -1.0, 1.0, 4, "h")
    counts = [int(c) for c in re.findall(r'data-count="(\d+)"', svg)]
    assert counts == [2, 0, 1, 3] and "1 null" in svg


def test_frames_at_indices_are_the_pipelines_keyframes(sample):
    """decode_frames_at gives the frames the pipeline kept (same frame numbers, same pictures)."""
    from models.decode import DecodeConfig, decode_frames_at, decode_keyframes

    uri = sample["expected"]["videos"][0]["uri"]
    kept = decode_keyframes(uri, DecodeConfig(short_side=224)).keyframes
    h, w = kept[0][1].shape[:2]
    got = decode_frames_at(uri, [c.frame_index for c, _ in kept] + [10 ** 6], max(w, h))
    assert sorted(got) == [c.frame_index for c, _ in kept]  # the index past the end is absent
    means = []
    for c, img in kept:
        assert got[c.frame_index].shape == img.shape
        assert np.abs(got[c.frame_index].astype(int) - img.astype(int)).mean() < 4
        means.append(img.reshape(-1, 3).mean(0))
    assert np.ptp(np.array(means), axis=0).max() > 20  # different shots: the frames are not one picture


# ---------------------------------------------------------------------------------------------
# The sample's report in a browser


@pytest.fixture(scope="module")
def index(sample, tmp_path_factory):
    from pipelines import extract

    work = tmp_path_factory.mktemp("report-index")
    doomed = work / "deleted-after-extraction.mp4"
    shutil.copy(sample["expected"]["videos"][0]["uri"], doomed)
    manifest = work / "manifest.jsonl"
    with open(sample["manifest"]) as f, open(manifest, "w") as out:
        out.write(f.read().rstrip("\n") + "\n")
        out.write(json.dumps({"uri": str(doomed), "video_id": HOSTILE_ID, "title": HOSTILE_TITLE}) + "\n")
    out = work / "out"
    rc = extract.run(["--input", str(manifest), "--output", str(out), "--clip-model", TINY_MODEL,
                      "--clip-pretrained", "none", "--no-progress"])
    assert rc == 0
    os.remove(doomed)
    return str(out)


@pytest.fixture(scope="module")
def report(index, tmp_path_factory):
    folder = tmp_path_factory.mktemp("report") / "report"
    stats = build_report(index, str(folder))
    assert stats.videos == 4 and stats.with_pictures == 3 and stats.pictures > 0
    return str(folder)


@pytest.fixture(scope="module")
def browser():
    sync_api = import_or_missing("playwright.sync_api", "Playwright for Python is not installed (pip install playwright)")
    if not os.path.exists(CHROMIUM):
        missing_prerequisite(f"{CHROMIUM} is absent (Debian: apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


class Page:
    """A browser tab that records console errors, page errors and every request."""

    def __init__(self, browser):
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.page = self.context.new_page()
        self.problems, self.requests = [], []
        self.page.on("console", lambda m: m.type == "error" and self.problems.append(f"console: {m.text}"))
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        self.page.on("request", lambda r: self.requests.append(r.url))

    def open(self, path: str):
        self.page.goto("file://" + os.path.abspath(path))
        self.page.wait_for_load_state("load")
        return self.page

    def screenshot(self, tmp_path_factory, name: str) -> str:
        """The whole page as a PNG test artifact under pytest's temporary folder."""
        path = str(tmp_path_factory.mktemp("screenshots") / name)
        self.page.screenshot(path=path, full_page=True)
        assert os.path.getsize(path) > 10_000
        return path

    def check_clean(self):
        assert not self.problems
        assert self.requests and all(u.startswith("file://") for u in self.requests), self.requests
        assert self.page.evaluate("window.__pwned") is None  # no injected script ran

    def close(self):
        self.context.close()


def _video_page(page, report, video_id):
    href = page.evaluate("""id => Array.from(document.querySelectorAll('#videos tbody tr'))
        .find(r => r.cells[1].textContent === id).cells[0].querySelector('a').getAttribute('href')""", video_id)
    return os.path.join(report, href)


@pytest.mark.slow
def test_index_page_in_chromium(report, index, browser, sample, tmp_path_factory):
    tab = Page(browser)
    page = tab.open(os.path.join(report, "index.html"))
    ids = page.eval_on_selector_all("#videos tbody tr", "rows => rows.map(r => r.cells[1].textContent)")
    assert sorted(ids) == sorted([v["video_id"] for v in sample["expected"]["videos"]] + [HOSTILE_ID])
    titles = page.eval_on_selector_all("#videos tbody tr a", "links => links.map(a => a.textContent)")
    assert HOSTILE_TITLE in titles  # the markup is text
    assert page.locator("#videos img, #videos script").count() == 0
    banner = page.locator("#random-weights")
    assert banner.is_visible() and "none" in banner.inner_text()
    assert page.evaluate("getComputedStyle(document.getElementById('random-weights')).backgroundColor") == _rgb("#c62828")
    assert page.locator("svg[aria-label='stage busy seconds'] rect").count() == 4  # decode, clip, ocr, asr

    def column(i):
        return page.eval_on_selector_all("#videos tbody tr:not([hidden])",
                                          f"rows => rows.map(r => r.cells[{i}].getAttribute('data-v'))")

    page.click("#videos th:nth-child(3)")  # duration: ascending
    durations = [float(v) for v in column(2)]
    assert durations == sorted(durations) and len(set(durations)) > 1
    page.click("#videos th:nth-child(3)")  # descending
    assert [float(v) for v in column(2)] == sorted(durations, reverse=True)
    page.click("#videos th:nth-child(2)")  # video id, as text
    assert page.eval_on_selector_all("#videos tbody tr", "rows => rows.map(r => r.cells[1].textContent)") == sorted(ids)

    target = sample["expected"]["videos"][1]
    page.fill("#filter", target["title"].split(":")[0])
    shown = page.eval_on_selector_all("#videos tbody tr:not([hidden])", "rows => rows.map(r => r.cells[1].textContent)")
    assert shown == [target["video_id"]] and page.inner_text("#shown") == "1"
    page.fill("#filter", "")
    assert page.locator("#videos tbody tr:not([hidden])").count() == 4
    tab.screenshot(tmp_path_factory, "index.png")
    tab.check_clean()
    tab.close()


@pytest.mark.slow
def test_video_pages_in_chromium(report, index, browser, sample, tmp_path_factory):
    videos = {r["video_id"]: r for r in _rows(index, "videos")}
    frames = _rows(index, "frames")
    segments = _rows(index, "asr_segments")
    tab = Page(browser)
    index_page = tab.open(os.path.join(report, "index.html"))
    pages = {v["video_id"]: _video_page(index_page, report, v["video_id"]) for v in sample["expected"]["videos"]}
    for expected in sample["expected"]["videos"]:
        vid = expected["video_id"]
        page = tab.open(pages[vid])
        # The subtitle lines, in the subtitle colour; the logo in the overlay colour.
        lines = page.locator("#lines-subtitle li.line-subtitle")
        want = [s["text"] for s in expected["subtitles"]]
        got = lines.all_inner_texts()
        assert len(got) == len(want) == 4, (got, want)
        for g, w in zip(got, want):
            assert difflib.SequenceMatcher(None, _squash(g), _squash(w)).ratio() >= 0.85, (g, w)
        colors = lines.evaluate_all("els => els.map(e => getComputedStyle(e).color)")
        assert set(colors) == {_rgb(rh.DOMAIN_COLORS["subtitle"])}
        overlay = page.locator("#lines-overlay li.line-overlay")
        assert [_squash(t) for t in overlay.all_inner_texts()] == [_squash(expected["logo"]["text"])]
        assert overlay.evaluate("e => getComputedStyle(e).color") == _rgb(rh.DOMAIN_COLORS["overlay"])
        # One box per line OCR read, in its domain's colour, its text on hover.
        read = [line for f in frames if f["video_id"] == vid for line in (f["ocr"] or [])]
        boxes = page.locator(".ocr-frame polygon")
        assert boxes.count() == len(read) > 0
        strokes = boxes.evaluate_all("els => els.map(e => [e.dataset.domain, getComputedStyle(e).stroke])")
        assert all(stroke == _rgb(rh.DOMAIN_COLORS[domain]) for domain, stroke in strokes)
        assert sorted(d for d, _ in strokes) == sorted(line["domain"] for line in read)
        hover = boxes.evaluate_all("els => els.map(e => e.querySelector('title').textContent)")
        assert any(_squash(expected["logo"]["text"]) in _squash(h) for h in hover)
        # Pictures: one per frame of the video, decoded (not blank).
        kept = [f for f in frames if f["video_id"] == vid]
        imgs = page.locator(".strip img")
        assert imgs.count() == sum(f["reason"] != "text" for f in kept) == videos[vid]["num_keyframes"]
        page.evaluate("() => Promise.all(Array.from(document.images).map(i => i.decode()))")
        assert all(w > 0 for w in imgs.evaluate_all("els => els.map(e => e.naturalWidth)"))
        assert page.locator(".ocr-frame image").count() == sum(1 for f in kept if f["ocr"])
        # The transcript: every segment with its times.
        texts = page.locator("#transcript td.segment-text").all_inner_texts()
        assert texts == [s["text"].strip() for s in sorted((s for s in segments if s["video_id"] == vid),
                                                            key=lambda s: s["segment_index"])]
        if expected["has_audio"]:
            spoken = set(re.findall(r"[a-z]+", expected["speech_text"].lower()))
            heard = set(re.findall(r"[a-z]+", " ".join(texts).lower()))
            assert len(spoken & heard) >= 0.6 * len(spoken), texts
        assert page.locator("svg[aria-label='timeline'] rect.segment").count() == len(texts)
        assert page.locator("svg[aria-label='timeline'] line.tick").count() == len(kept)
        assert page.locator("#random-weights").is_visible()
        assert page.locator("#no-pictures").count() == 0
        if vid == sample["expected"]["videos"][0]["video_id"]:
            tab.screenshot(tmp_path_factory, "video.png")
    tab.check_clean()
    tab.close()


@pytest.mark.slow
def test_hostile_entry_renders_as_text_and_its_deleted_file_is_explained(report, browser):
    assert sorted(os.listdir(report)) == ["index.html", "v", "vmm-report.json"]
    assert not os.path.exists(os.path.join(os.path.dirname(report), "x"))
    assert all(re.fullmatch(r"[A-Za-z0-9_-]+(\.html)?", n) for n in os.listdir(os.path.join(report, "v")))
    tab = Page(browser)
    page = tab.open(_video_page(tab.open(os.path.join(report, "index.html")), report, HOSTILE_ID))
    assert os.path.dirname(page.url[len("file://"):]) == os.path.join(os.path.abspath(report), "v")
    assert page.inner_text("h1") == HOSTILE_TITLE
    assert HOSTILE_ID in page.inner_text("table.scores")
    why = page.inner_text("#no-pictures")
    assert "FileNotFound" in why and "deleted-after-extraction.mp4" in why
    assert page.locator("img, .ocr-frame image").count() == 0
    assert page.locator(".ocr-frame polygon").count() > 0  # the boxes the index holds, without the picture
    tab.check_clean()
    tab.close()


def test_limit_video_ids_and_atomic_rebuild(index, tmp_path):
    folder = tmp_path / "report"
    build_report(index, str(folder), limit=0)
    pages = [n for n in os.listdir(folder / "v") if n.endswith(".html")]
    assert len(pages) == 4 and not [n for n in os.listdir(folder / "v") if not n.endswith(".html")]
    assert all("--limit 0" in (folder / "v" / n).read_text() for n in pages)
    (folder / "stale.txt").write_text("from an older report")
    stats = build_report(index, str(folder), limit=1, video_ids=["sample-001", "sample-002"])
    assert stats.videos == 2 and stats.with_pictures == 1
    assert not (folder / "stale.txt").exists()  # replaced as a whole
    assert sorted(os.listdir(tmp_path)) == ["report"]  # no temporary or old folder left beside it
    html = (folder / "index.html").read_text()
    assert html.count("<tr><td><a href=") == 2 and "sample-000" not in html
    with pytest.raises(ReportError, match="no video 'nope'"):
        build_report(index, str(folder), video_ids=["nope"])
    assert (folder / "index.html").read_text() == html  # a failed build leaves the report as it was
    keep = tmp_path / "not-a-report"
    keep.mkdir()
    (keep / "data.txt").write_text("x")
    with pytest.raises(ReportError, match="not a vmm report"):
        build_report(index, str(keep))
    assert (keep / "data.txt").exists()


def test_cli_report(index, tmp_path):
    from pipelines import cli

    assert cli.main(["report", "--input", index, "--output", str(tmp_path / "r"), "--limit", "0"]) == 0
    assert (tmp_path / "r" / "index.html").exists()
    assert cli.main(["report", "--input", str(tmp_path / "none"), "--output", str(tmp_path / "r2")]) == 2
    assert cli.main(["report", "--input", index, "--output", str(tmp_path / "r2"), "--limit", "-1"]) == 2
    assert not (tmp_path / "r2").exists()


def test_a_decode_that_does_not_finish_costs_only_the_pictures(index, tmp_path):
    folder = tmp_path / "report"
    stats = build_report(index, str(folder), video_ids=["sample-000"], decode_timeout_s=1e-3)
    assert (stats.videos, stats.with_pictures, stats.pictures) == (1, 0, 0)
    assert os.listdir(folder / "v") == [safe_name("sample-000") + ".html"]  # the page, no pictures folder
    page = (folder / "v" / (safe_name("sample-000") + ".html")).read_text()
    assert "No pictures: decoding" in page and "(Timeout: " in page
