"""The web UI in a real browser: `setseq ui` on a free port, driven by headless Chromium (Debian's
chromium and chromium-driver, through Selenium; no browser is downloaded). Upload a clip, train a few
steps on the tiny toy base, generate, watch the video play, export and download the LoRA file.

SETSEQ_UI_SCREENSHOTS=FOLDER saves the page's screenshots there; without it they go to the test's
temporary folder. docs/ui/*.png, the README's, were taken on the embedded toy base with
    SETSEQ_UI_SCREENSHOTS=docs/ui SETSEQ_UI_BASE=toy SETSEQ_UI_STEPS=100 pytest tests/test_ui_browser.py
"""

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
if not (CHROMIUM and DRIVER):
    if os.environ.get("SETSEQ_REQUIRE_BROWSER"):  # CI (.ci/run) installs them: a missing browser is a failure there
        raise RuntimeError("SETSEQ_REQUIRE_BROWSER is set, but chromium or chromedriver is not on the PATH.")
    pytest.skip("needs Debian's chromium and chromium-driver (.ci/run installs them)", allow_module_level=True)
selenium = pytest.importorskip("selenium", reason="needs selenium (the dev extra)")
pytest.importorskip("gradio", reason="needs gradio (the ui extra)")

from selenium import webdriver  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

EXAMPLES = Path(__file__).resolve().parent.parent / "src" / "setseq" / "examples"
BASE = os.environ.get("SETSEQ_UI_BASE", "toy-tiny")  # a few steps on the tiny base by default: fast
STEPS = os.environ.get("SETSEQ_UI_STEPS", "2")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _serve(tmp_path, *flags):
    """`setseq ui` on a free port with a fresh workspace; yields (url, workspace) once it answers."""
    port = _free_port()
    ws = tmp_path / "workspace"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "setseq.cli", "ui", "--workspace", str(ws), "--port", str(port), *flags]
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(360):  # the suite may share the cores: give the server up to 3 minutes
            try:
                urllib.request.urlopen(url, timeout=1)
                break
            except OSError:
                assert proc.poll() is None, (tmp_path / "server.log").read_text()
                time.sleep(0.5)
        yield url, ws
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with _serve(tmp_path_factory.mktemp("server"), "--no-examples") as running:
        yield running


@pytest.fixture
def browser(tmp_path):
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--autoplay-policy=no-user-gesture-required",
        "--window-size=1400,1500",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        opts.add_argument(flag)
    driver = webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=DRIVER))
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    driver.downloads = downloads
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver, what, timeout=180):  # a guard against hangs, generous for a loaded machine
    from selenium.common.exceptions import TimeoutException

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.25).until(lambda d: what(d))
    except TimeoutException:
        shot = Path(os.environ.get("SETSEQ_UI_SCREENSHOTS") or driver.downloads.parent) / "failed.png"
        driver.save_screenshot(str(shot))
        raise AssertionError(f"the page did not get there in {timeout} s; see {shot}") from None


def _text(driver, css):
    found = driver.find_elements(By.CSS_SELECTOR, css)
    return found[0].text if found else ""


def _type(driver, css, text):
    box = driver.find_element(By.CSS_SELECTOR, css)
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(Keys.DELETE)
    box.send_keys(text)


def _screenshot(driver, path):
    driver.execute_script("window.scrollTo(0, 0)")
    time.sleep(0.5)  # a frame or two of the videos
    driver.save_screenshot(str(path))


def _tab(driver, name):
    driver.find_element(By.XPATH, f"//button[@role='tab'][normalize-space()='{name}']").click()


def test_the_server_serves_no_file_outside_the_workspace(server, tmp_path):
    import urllib.error

    url, ws = server
    secret = tmp_path / "secret.txt"  # beside the workspace, not in it
    secret.write_text("not for the page")
    inside = ws / "clips" / "note.txt"
    inside.write_text("for the page")
    assert urllib.request.urlopen(f"{url}gradio_api/file={inside}", timeout=10).read() == b"for the page"
    for path in (secret, f"{ws}/../secret.txt", "/etc/passwd", Path(__file__)):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{url}gradio_api/file={path}", timeout=10)
        assert refused.value.code in (403, 404)


def test_auth_guards_the_page_and_the_files(tmp_path, monkeypatch):
    import http.cookiejar
    import urllib.error
    import urllib.parse

    monkeypatch.setenv("SETSEQ_UI_TOKEN", "s3cret")
    with _serve(tmp_path, "--listen", "127.0.0.1", "--auth", "env") as (url, ws):
        clip = f"{url}gradio_api/file={ws / 'clips' / 'sprite.txt'}"
        for path in (f"{url}config", clip):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(path, timeout=10)
            assert refused.value.code == 401
        session = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        with pytest.raises(urllib.error.HTTPError):
            session.open(f"{url}login", urllib.parse.urlencode({"username": "setseq", "password": "nope"}).encode())
        session.open(f"{url}login", urllib.parse.urlencode({"username": "setseq", "password": "s3cret"}).encode())
        assert b"[v]" in session.open(clip, timeout=10).read()


def test_upload_train_generate_export_in_the_browser(server, browser, tmp_path):
    url, ws = server
    shots = Path(os.environ.get("SETSEQ_UI_SCREENSHOTS") or tmp_path / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    clips = tmp_path / "upload"
    clips.mkdir()
    for f in ("sprite.mp4", "sprite.txt", "sprite.mask.mp4"):
        shutil.copy(EXAMPLES / f, clips / f)
    d = browser
    d.get(url)
    _wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, "#upload input[type=file]"))

    # upload: the clip and its caption land in the workspace, and the caption fills the prompts
    d.find_element(By.CSS_SELECTOR, "#upload input[type=file]").send_keys(
        "\n".join(str(clips / f) for f in ("sprite.mp4", "sprite.txt", "sprite.mask.mp4"))
    )
    _wait(d, lambda d: "[v]" in d.find_element(By.CSS_SELECTOR, "#prompt textarea").get_attribute("value"))
    assert (ws / "clips" / "sprite.mp4").is_file() and (ws / "clips" / "sprite.txt").is_file()
    _wait(d, lambda d: "carry their tokens" in _text(d, "#prompt-check"))

    # the tokens are checked as typed, with the CLI's sentence
    _type(d, "#prompt textarea", "a diamond on a blue background.")
    _wait(d, lambda d: "must contain its concept token [v]" in _text(d, "#prompt-check"))
    _type(d, "#prompt textarea", "a [v] diamond on a blue background.")
    _wait(d, lambda d: "carry their tokens" in _text(d, "#prompt-check"))

    # train a few steps on the tiny toy base, with a validation sample
    _type(d, "#base input", BASE)
    d.find_element(By.CSS_SELECTOR, "#base input").send_keys(Keys.ENTER)
    for css, value in (("#steps1 textarea", STEPS), ("#steps2 textarea", STEPS), ("#every textarea", STEPS)):
        _type(d, css, value)
    d.find_element(By.CSS_SELECTOR, "#train-button").click()
    patience = 180 * max(1, int(STEPS) // 2)
    if int(STEPS) >= 20:  # a run long enough to be caught learning: the README's screenshot shows one
        _wait(d, lambda d: "stage 2/2" in _text(d, "#status") and "left" in _text(d, "#status"), timeout=patience)
        _wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, "#sample video"))
        _screenshot(d, shots / "train.png")
    _wait(d, lambda d: "done" in _text(d, "#status"), timeout=patience)
    assert (ws / "runs" / "sprite" / "sprite.safetensors").is_file()
    assert list((ws / "runs" / "sprite" / "sprite.samples").glob("*.mp4"))
    _wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, "#loss-plot svg polyline, #loss-plot svg path"))
    _wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, "#sample video"))
    if int(STEPS) < 20:
        _screenshot(d, shots / "train.png")

    # generate: the result plays beside the training clip
    _tab(d, "Generate")
    _wait(d, lambda d: "[u]" in d.find_element(By.CSS_SELECTOR, "#gen-prompt textarea").get_attribute("value"))
    if BASE == "toy-tiny":
        _type(d, "#gen-steps textarea", "3")
    d.find_element(By.CSS_SELECTOR, "#generate-button").click()
    _wait(d, lambda d: "wrote" in _text(d, "#gen-status"))
    playing = "const v = document.querySelector('#result video'); return !!v && v.readyState >= 2 && !v.paused && v.currentTime > 0;"
    _wait(d, lambda d: d.execute_script(playing))
    assert d.find_elements(By.CSS_SELECTOR, "#source video")
    assert (ws / "runs" / "sprite" / "results" / "0001.mp4").is_file()
    # an edit (another seed, no motion) joins the earlier results; picking the first plays it again
    _type(d, "#seed textarea", "1")
    d.execute_script(
        "const i = document.querySelector('#motion-scale input[type=number]'); i.value = 0;"
        "i.dispatchEvent(new Event('input', {bubbles: true})); i.dispatchEvent(new Event('change', {bubbles: true}));"
    )
    d.find_element(By.CSS_SELECTOR, "#generate-button").click()
    _wait(d, lambda d: "0002.mp4" in _text(d, "#gen-status"))
    thumbs = _wait(d, lambda d: len(found := d.find_elements(By.CSS_SELECTOR, "#history button img")) == 2 and found)
    assert json.loads((ws / "runs" / "sprite" / "results" / "0002.json").read_text())["motion_scale"] == 0
    thumbs[1].click()
    _wait(d, lambda d: "0001.mp4" in _text(d, "#gen-status"))
    _screenshot(d, shots / "generate.png")

    # export: a diffusers LoRA file, downloaded from the page
    _tab(d, "Export")
    d.find_element(By.CSS_SELECTOR, "#export-button").click()
    link = _wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, "#exported a"))[0]
    link.click()
    name = "sprite-diffusers-full.safetensors"
    _wait(d, lambda d: (d.downloads / name).is_file())
    assert (d.downloads / name).read_bytes() == (ws / "runs" / "sprite" / "exports" / name).read_bytes()
