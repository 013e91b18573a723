"""The UI in a real browser (headless Chromium via selenium): upload, 开始识别, text appears; batch,
live recording (Chromium's fake microphone plays a test clip) and system info. Saves a screenshot of
each tab to docs/screenshots/ (the README and docs/webui.md show them)."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from conftest import DATA, SCREENSHOT_DIR, Server, missing_tool

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
CHROMEDRIVER = shutil.which("chromedriver")
SHOTS = SCREENSHOT_DIR
if not (CHROMIUM and CHROMEDRIVER):
    pytest.skip(
        missing_tool("chromium/chromedriver", "apt-get install chromium chromium-driver"), allow_module_level=True
    )

from selenium import webdriver  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


def make_driver(lang: str, profile: Path, fake_audio: Path | None = None) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--window-size=1400,1100",
        f"--lang={lang}",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
    ):
        options.add_argument(flag)
    if fake_audio:
        options.add_argument(f"--use-file-for-fake-audio-capture={fake_audio}")
    options.add_experimental_option("prefs", {"intl.accept_languages": lang})
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))


@pytest.fixture()
def browser(tmp_path: Path):
    driver = make_driver(
        "zh-CN", Path(tempfile.mkdtemp(dir=tmp_path)), fake_audio=DATA / "utterances" / "funasr_asr_example.wav"
    )
    yield driver
    driver.quit()


def open_tab(driver: webdriver.Chrome, label: str) -> None:
    driver.find_element(By.XPATH, f"//button[@role='tab'][contains(., '{label}')]").click()


def wait_for(driver: webdriver.Chrome, condition, timeout: float = 60):
    return WebDriverWait(driver, timeout, poll_frequency=0.3).until(lambda d: condition(d))


def test_four_tabs_with_results(server: Server, browser: webdriver.Chrome) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    browser.get(server.url)
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#single-start"))
    assert "开始识别" in browser.find_element(By.CSS_SELECTOR, "#single-start").text
    assert "热词列表" in browser.page_source

    # Single file: upload, 开始识别, the text appears.
    browser.find_element(By.CSS_SELECTOR, "#single-file input[type=file]").send_keys(
        str(DATA / "utterances" / "funasr_asr_example.wav")
    )
    wait_for(browser, lambda d: "funasr_asr_example" in d.find_element(By.CSS_SELECTOR, "#single-file").text)
    browser.find_element(By.CSS_SELECTOR, "#single-start").click()
    wait_for(browser, lambda d: d.find_element(By.CSS_SELECTOR, "#single-text textarea").get_attribute("value"))
    wait_for(browser, lambda d: "倍实时" in d.page_source)
    browser.save_screenshot(str(SHOTS / "single.png"))

    # Batch: three clips and a corrupt file.
    open_tab(browser, "批量处理")
    files = [*(sorted((DATA / "utterances").glob("*.wav"))[:3]), DATA / "bad" / "random_bytes.mp3"]
    browser.find_element(By.CSS_SELECTOR, "#batch-files input[type=file]").send_keys("\n".join(map(str, files)))
    wait_for(browser, lambda d: "random_bytes" in d.find_element(By.CSS_SELECTOR, "#batch-files").text)
    browser.find_element(By.CSS_SELECTOR, "#batch-start").click()
    wait_for(browser, lambda d: "结果已保存" in d.find_element(By.CSS_SELECTOR, "#batch-status").text)
    assert "random_bytes.mp3：不是可读取的音频" in browser.find_element(By.CSS_SELECTOR, "#batch-table").text
    assert str(server.log.parent) not in browser.find_element(By.CSS_SELECTOR, "#batch-status").text
    browser.save_screenshot(str(SHOTS / "batch.png"))

    # A reload finds the batch again (the owner cookie); its zip is this browser's alone.
    browser.refresh()
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#single-start"))
    open_tab(browser, "批量处理")
    wait_for(browser, lambda d: "成功 3，失败 1" in d.find_element(By.CSS_SELECTOR, "#batch-history-table").text)
    link = wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#batch-history-files a[href*='.zip']"))[0]
    zip_url = link.get_attribute("href")
    cookie = browser.get_cookie("paraformer_owner")
    assert cookie and cookie["httpOnly"]
    assert httpx.get(zip_url, cookies={cookie["name"]: cookie["value"]}).status_code == 200
    assert httpx.get(zip_url).status_code == 404  # anyone else, with the same link

    # Live: the fake microphone plays the clip; the streamed transcript fills in while recording.
    open_tab(browser, "实时录音")
    record = "#live-mic button.record-button"
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, record))[0].click()
    time.sleep(2)  # the first click loads the recorder module; it may need a second one to start
    if browser.find_elements(By.CSS_SELECTOR, record):
        browser.find_element(By.CSS_SELECTOR, record).click()
    wait_for(browser, lambda d: d.find_element(By.CSS_SELECTOR, "#live-transcript").text.strip(), timeout=40)
    time.sleep(3)  # a few more chunks, so the screenshot shows settled and tentative text
    for stop in browser.find_elements(By.XPATH, "//div[@id='live-mic']//button[contains(@class, 'stop')]"):
        stop.click()
    browser.save_screenshot(str(SHOTS / "live.png"))

    # System info.
    open_tab(browser, "系统信息")
    browser.find_element(By.CSS_SELECTOR, "#sysinfo-refresh").click()
    wait_for(browser, lambda d: "设备类型" in d.find_element(By.CSS_SELECTOR, "#sysinfo-table").text)
    browser.save_screenshot(str(SHOTS / "sysinfo.png"))


BUSY = "This application is currently busy. Please try again. "  # Gradio's frontend writes this on HTTP 503


@pytest.mark.parametrize(
    "lang, empty, busy",
    [
        ("zh-CN", "empty.wav：文件是空的（0 字节）", "服务繁忙"),
        ("en-US", "empty.wav: the file is empty (0 bytes)", "currently busy"),
    ],
)
def test_errors_in_the_browsers_language(server: Server, tmp_path: Path, lang: str, empty: str, busy: str) -> None:
    driver = make_driver(lang, tmp_path / f"profile-{lang}")
    try:
        driver.get(server.url)
        wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#single-start"))
        driver.find_element(By.CSS_SELECTOR, "#single-file input[type=file]").send_keys(str(DATA / "bad" / "empty.wav"))
        wait_for(driver, lambda d: "empty" in d.find_element(By.CSS_SELECTOR, "#single-file").text)
        driver.find_element(By.CSS_SELECTOR, "#single-start").click()
        toast = wait_for(
            driver,
            lambda d: " ".join(t.text for t in d.find_elements(By.CSS_SELECTOR, "[data-testid='toast-body']")) or None,
            timeout=30,
        )
        assert empty in toast and "/" not in toast.replace(" / ", ""), toast
        # Gradio's own notice for a full queue is written by its frontend in English; the page's script
        # puts it in the UI's language (a text node like the one Gradio adds, to keep the queue out of it).
        driver.execute_script(
            "const n = document.createElement('div'); n.id = 'busy-probe';"
            "document.body.appendChild(n); n.textContent = arguments[0];",
            BUSY,
        )
        wait_for(driver, lambda d: busy in d.find_element(By.ID, "busy-probe").text, timeout=10)
    finally:
        driver.quit()


def test_english_browser_gets_english(server: Server, tmp_path: Path) -> None:
    driver = make_driver("en-US", tmp_path / "profile-en")
    try:
        driver.get(server.url)
        button = wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#single-start"))[0]
        wait_for(driver, lambda d: "Start recognition" in button.text, timeout=20)
        assert "Hotwords" in driver.page_source and "开始识别" not in button.text
    finally:
        driver.quit()


def test_speakers_in_the_single_and_batch_tabs(server: Server, browser: webdriver.Chrome, tmp_path: Path) -> None:
    """Two voices alternating, 区分说话人 ticked: the sentence table and the batch CSV name the speakers."""
    import csv
    import html

    import numpy as np
    import soundfile as sf

    SHOTS.mkdir(parents=True, exist_ok=True)
    voices = [
        sf.read(DATA / "utterances" / n, dtype="float32")[0]
        for n in ("funasr_asr_example.wav", "firered_BAC009S0764W0121.wav")
    ]
    pause = np.zeros(12800, np.float32)
    meeting = tmp_path / "meeting.wav"
    sf.write(meeting, np.concatenate([voices[0], pause, voices[1], pause, voices[0], pause, voices[1]]), 16000)

    browser.get(server.url)
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#single-start"))
    browser.find_element(By.CSS_SELECTOR, "#single-file input[type=file]").send_keys(str(meeting))
    wait_for(browser, lambda d: "meeting" in d.find_element(By.CSS_SELECTOR, "#single-file").text)
    browser.find_element(By.CSS_SELECTOR, "#single-speakers input[type=checkbox]").click()
    count = browser.find_element(By.CSS_SELECTOR, "#single-num-speakers input")
    count.clear()
    count.send_keys("2")
    browser.find_element(By.CSS_SELECTOR, "#single-start").click()
    try:
        wait_for(
            browser,
            lambda d: "说话人2" in d.find_element(By.CSS_SELECTOR, "#single-text textarea").get_attribute("value")
            and "倍实时" in d.page_source,
        )
    finally:
        browser.save_screenshot(str(SHOTS / "single-speakers.png"))
    assert browser.find_element(By.CSS_SELECTOR, "#single-text textarea").get_attribute("value").startswith("说话人1：")
    assert "说话人1" in browser.find_element(By.CSS_SELECTOR, "#single-sentences").text

    open_tab(browser, "批量处理")
    files = [meeting, DATA / "utterances" / "funasr_asr_example.wav"]
    browser.find_element(By.CSS_SELECTOR, "#batch-files input[type=file]").send_keys("\n".join(map(str, files)))
    wait_for(browser, lambda d: "funasr_asr_example" in d.find_element(By.CSS_SELECTOR, "#batch-files").text)
    browser.find_element(By.CSS_SELECTOR, "#batch-speakers input[type=checkbox]").click()
    browser.find_element(By.CSS_SELECTOR, "#batch-start").click()
    wait_for(browser, lambda d: d.find_elements(By.XPATH, "//a[contains(@href, 'results.csv')]"), timeout=120)
    link = browser.find_element(By.XPATH, "//a[contains(@href, 'results.csv')]").get_attribute("href")
    # The CSV as this browser downloads it (its own session), shown as a page for the screenshot.
    text = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch(arguments[0]).then(r => r.text()).then(done, e => done('error: ' + e));",
        link,
    )
    rows = list(csv.reader(text.lstrip("\ufeff").splitlines()))
    assert rows[0][:6] == ["file", "duration_s", "confidence", "status", "error", "speakers"]
    assert all(row[5] and row[6].startswith("说话人1：") for row in rows[1:])
    table = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    page = (
        "<html><head><meta charset='utf-8'><style>body{font-family:sans-serif}td{border:1px solid #999;"
        "padding:4px;vertical-align:top;white-space:pre-wrap}</style></head><body><h3>results.csv</h3><table>"
        f"{table}</table></body></html>"
    )
    page_file = tmp_path / "results.html"
    page_file.write_text(page, encoding="utf-8")
    browser.get(page_file.as_uri())
    browser.save_screenshot(str(SHOTS / "batch-csv-speakers.png"))
