"""`ipfacediff serve` driven end to end in Debian's chromium (selenium + chromium-driver, never a
downloaded browser) on the tiny random-weight models: upload a real clip, see the face, preview, run,
reload mid-run, download; bad input answered in the page. Screenshots of each screen go to the test's
tmp dir (and docs/screenshots/ with IPFACEDIFF_SCREENSHOTS=1)."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

CHROMIUM, DRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1280,2000", "--disable-dev-shm-usage"]
DOCS = Path(__file__).resolve().parents[1] / "docs" / "screenshots"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app(grid_clip, tmp_path_factory):
    if not (CHROMIUM.exists() and DRIVER.exists()):
        pytest.skip("Debian chromium / chromium-driver not installed (apt-get install chromium chromium-driver)")
    from ipfacediff.app.engine import EditOptions
    from ipfacediff.app.web import serve
    from ipfacediff.diffusion.models import build_tiny

    root = tmp_path_factory.mktemp("app")
    build_tiny(root / "models" / "base", seed=0)
    (root / "samples").mkdir()
    clip = grid_clip(8, out=root / "samples" / "talk.mp4")
    defaults = EditOptions(steps=2, seed=0, models=str(root / "models" / "base"), branches="base", crop_size=64)
    port = _free_port()
    demo, _ = serve("127.0.0.1", port, root / "out", [clip], defaults, block=False)
    yield {"url": f"http://127.0.0.1:{port}/", "clip": clip, "root": root, "out": root / "out"}
    demo.close()


@pytest.fixture(scope="module")
def browser(app, tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # selenium-manager must never fetch a browser or driver
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for f in FLAGS + [f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"]:
        opts.add_argument(f)
    d = webdriver.Chrome(service=Service(str(DRIVER)), options=opts)
    d.set_page_load_timeout(60)
    yield d
    d.quit()


def _wait(pred, timeout=90.0, what=""):
    t0 = time.time()
    while time.time() - t0 < timeout:
        got = pred()
        if got:
            return got
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _shot(driver, folder: Path, name: str) -> Path:
    p = folder / f"{name}.png"
    driver.save_screenshot(str(p))
    if os.environ.get("IPFACEDIFF_SCREENSHOTS"):  # README copies at 60% size
        import cv2

        DOCS.mkdir(parents=True, exist_ok=True)
        im = cv2.imread(str(p))
        cv2.imwrite(str(DOCS / p.name), cv2.resize(im, (im.shape[1] * 6 // 10, im.shape[0] * 6 // 10), interpolation=cv2.INTER_AREA),
                    [cv2.IMWRITE_PNG_COMPRESSION, 9])
    return p


def test_upload_preview_run_reload_download(app, browser, tmp_path):
    import requests
    from selenium.webdriver.common.by import By

    from ipfacediff.video import probe

    d, css = browser, (lambda s: browser.find_elements(By.CSS_SELECTOR, s))
    d.get(app["url"])
    _wait(lambda: css("#upload input[type=file]"), what="the page")
    _shot(d, tmp_path, "01_start")

    # bad input: a non-video upload -> a message in the page, server alive
    junk = tmp_path / "notes.mp4"
    junk.write_text("not a video")
    css("#upload input[type=file]")[0].send_keys(str(junk))
    _wait(lambda: "not a readable video" in css("#message")[0].text, what="the non-video message")
    _shot(d, tmp_path, "02_bad_upload")

    # a video without a face
    import numpy as np

    from ipfacediff.video import write_video

    write_video(tmp_path / "wall.mp4", np.full((4, 96, 128, 3), 90, np.uint8), 10)
    d.get(app["url"])
    _wait(lambda: css("#upload input[type=file]"), what="the page")
    css("#upload input[type=file]")[0].send_keys(str(tmp_path / "wall.mp4"))
    _wait(lambda: "wall.mp4: no face" in css("#message")[0].text, what="the no-face message")

    d.get(app["url"])  # fresh page, then the real clip
    _wait(lambda: css("#upload input[type=file]"), what="the page")
    css("#upload input[type=file]")[0].send_keys(str(app["clip"]))
    _wait(lambda: css("#face img") and css("#crop img") and "face found" in css("#message")[0].text, what="the tracked face")
    assert "360x288" in css("#message")[0].text
    _shot(d, tmp_path, "03_face")

    # empty prompt -> message, nothing queued
    css("#preview-btn")[0].click()
    _wait(lambda: "empty prompt" in css("#message")[0].text, what="the empty-prompt message")
    css("#prompts textarea")[0].send_keys("a photo of a person with blond hair")
    css("#preview-btn")[0].click()
    loaded = "return Array.from(document.querySelectorAll('#preview img')).some(i => i.complete && i.naturalWidth > 0)"
    _wait(lambda: "Preview:" in css("#message")[0].text and d.execute_script(loaded), timeout=120, what="the preview")
    _shot(d, tmp_path, "04_preview")

    css("#feather textarea, #feather input")[0].send_keys("3")  # user-set feather band for the full run
    css("#run-btn")[0].click()
    _wait(lambda: "Job 1 started" in css("#message")[0].text, what="job 1")
    css("#run-btn")[0].click()  # a second job while one runs: queued, said so
    _wait(lambda: "Job 2 queued: job 1 is running" in css("#message")[0].text, what="the queued message")
    bars = "return Array.from(document.querySelectorAll('.job[data-state=running] progress')).map(p => p.value)"
    _wait(lambda: css("#job-2") and 100 in (d.execute_script(bars) or []), what="a running job with a finished phase bar")
    _shot(d, tmp_path, "05_running")
    d.refresh()  # the running job survives a reload
    _wait(lambda: css("#job-1") and css("#job-2"), what="the jobs after reload")
    _wait(lambda: css("#job-2[data-state=done]") and css("#job-1[data-state=done]"), timeout=180, what="both jobs done")
    _wait(lambda: len(css("#results a")) >= 4, what="the result links")
    _shot(d, tmp_path, "06_done")

    links = {a.get_attribute("href") for a in css("#results a")}
    videos = [u for u in links if u.split("?")[0].endswith(".mp4")]
    records = [u for u in links if u.split("?")[0].endswith(".json")]
    assert len(videos) == 2 and len(records) == 2
    src = probe(app["clip"])
    for u in videos:
        r = requests.get(u, timeout=30)
        assert r.status_code == 200
        got = tmp_path / "download.mp4"
        got.write_bytes(r.content)
        res = probe(got)
        assert (res.width, res.height, res.n_frames, res.fps, res.has_audio) == (src.width, src.height, src.n_frames, src.fps, True)
    rec = requests.get(records[0], timeout=30).json()
    assert rec["prompt"] == "a photo of a person with blond hair" and rec["mask"]["region"] == "face_hair"
    assert rec["mask"]["feather_px"] == 3.0 and rec["mask"]["dilate_px"] == 64 / 32  # set in the page / default
    # the output folder holds only finished outputs (no temporary files), one folder per job
    files = sorted(p.relative_to(app["out"]).as_posix() for p in app["out"].rglob("*") if p.is_file())
    assert len(files) == 4 and all(f.split("/")[0] in ("job0001", "job0002") and not Path(f).name.startswith(".") for f in files)
    # serves only what it wrote: the download URL pattern with a path outside its folders is refused
    prefix = videos[0].split("file=")[0] + "file="
    assert requests.get(videos[0], timeout=30).status_code == 200
    for other in (app["clip"], app["root"] / "models" / "base" / "model_index.json"):
        assert other.is_file() and requests.get(prefix + str(other), timeout=30).status_code in (403, 404)
