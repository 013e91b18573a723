"""The UI's model picker in a real browser (headless Chromium): SenseVoice chosen in the single-file tab, the
hotword box hidden, the text and the 语种/情绪/事件 columns shown; saves docs/screenshots' sensevoice.png."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from conftest import DATA, SCREENSHOT_DIR, Server
from test_webui_browser import make_driver, wait_for

pytestmark = pytest.mark.browser

from selenium.webdriver.common.by import By  # noqa: E402


def test_the_model_picker_chooses_sensevoice(sv_server: Server, tmp_path: Path) -> None:
    browser = make_driver("zh-CN", Path(tempfile.mkdtemp(dir=tmp_path)))
    try:
        SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
        browser.get(sv_server.url)
        wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#single-model"))
        assert browser.find_element(By.CSS_SELECTOR, "#single-hotwords").is_displayed()
        browser.find_element(By.XPATH, "//*[@id='single-model']//label[contains(., 'SenseVoice-Small')]").click()
        wait_for(
            browser,
            lambda d: not any(e.is_displayed() for e in d.find_elements(By.CSS_SELECTOR, "#single-hotwords textarea")),
        )
        browser.find_element(By.CSS_SELECTOR, "#single-file input[type=file]").send_keys(
            str(DATA / "utterances" / "funasr_asr_example.wav")
        )
        wait_for(browser, lambda d: "funasr_asr_example" in d.find_element(By.CSS_SELECTOR, "#single-file").text)
        browser.find_element(By.CSS_SELECTOR, "#single-start").click()
        wait_for(browser, lambda d: d.find_element(By.CSS_SELECTOR, "#single-text textarea").get_attribute("value"))
        wait_for(browser, lambda d: "语种" in d.find_element(By.CSS_SELECTOR, "#single-sentences").text)
        assert "<|" not in browser.find_element(By.CSS_SELECTOR, "#single-text textarea").get_attribute("value")
        assert "SenseVoice-Small" in browser.page_source
        browser.save_screenshot(str(SCREENSHOT_DIR / "sensevoice.png"))
    finally:
        browser.quit()
