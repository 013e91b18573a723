"""Hotword lists and their verification in a real browser (headless Chromium): a list made in the 热词库 tab from
../shared/audio/hotwords.tsv's words, used in the single tab through the picker, then a verification of the shared
utterances those words come from, with its report downloaded. Screenshots go to SCREENSHOT_DIR (docs/screenshots
with `SCREENSHOT_DIR=docs/screenshots`)."""

from __future__ import annotations

import csv
import tempfile
from pathlib import Path

import httpx
import pytest

from conftest import ROOT, SCREENSHOT_DIR, Server
from test_webui_browser import By, make_driver, open_tab, wait_for

pytestmark = pytest.mark.browser

SHARED = ROOT.parent / "shared" / "audio"


def shared_set() -> tuple[list[str], list[tuple[Path, str]]]:
    """hotwords.tsv's words, and its files with their manifest.tsv references."""
    if not (SHARED / "hotwords.tsv").exists():
        pytest.skip("../shared/audio is not here (CI has it)")
    with open(SHARED / "manifest.tsv", encoding="utf-8") as f:
        references = {row["path"]: row["reference"] for row in csv.DictReader(f, delimiter="\t")}
    words: list[str] = []
    files = []
    with open(SHARED / "hotwords.tsv", encoding="utf-8") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            words += [w for w in row["hotwords"].split(",") if w and w not in words]
            files.append((SHARED / row["path"], references[row["path"]]))
    return words, files


def type_into(driver, selector: str, text: str) -> None:
    """Type into a text box once the tab has rendered it, and see that it holds the text (a tab renders its
    components when first opened; keys sent before that are lost)."""

    def typed(d) -> bool:
        box = d.find_element(By.CSS_SELECTOR, selector)
        if box.get_attribute("value") != text:
            box.clear()
            box.send_keys(text)
        return box.get_attribute("value") == text

    wait_for(driver, typed, timeout=30)


def choose(driver, elem_id: str, text: str) -> None:
    """Pick the option containing `text` in a Gradio dropdown (its choices arrive when it takes the focus)."""
    driver.find_element(By.CSS_SELECTOR, f"#{elem_id} input").click()
    options = f"//*[@role='option' or self::li][contains(., '{text}')]"
    wait_for(driver, lambda d: [e for e in d.find_elements(By.XPATH, options) if e.is_displayed()], timeout=30)[
        0
    ].click()


def test_a_list_made_used_and_verified_in_the_browser(server: Server, tmp_path: Path) -> None:
    words, files = shared_set()
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    driver = make_driver("zh-CN", Path(tempfile.mkdtemp(dir=tmp_path)))
    try:
        driver.get(server.url)
        wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#single-start"))

        # 热词库: a list of the shared set's words
        open_tab(driver, "热词库")
        type_into(driver, "#lists-name input, #lists-name textarea", "地名")
        type_into(driver, "#lists-words textarea", "\n".join(words))
        driver.find_element(By.CSS_SELECTOR, "#lists-create").click()
        wait_for(driver, lambda d: "已新建热词库“地名”" in d.find_element(By.CSS_SELECTOR, "#lists-status").text)
        driver.save_screenshot(str(SCREENSHOT_DIR / "hotword-lists.png"))

        # the single tab: the picker fills the hotword box with the list's words
        open_tab(driver, "单个文件")
        choose(driver, "single-hotwords-list", "地名")
        box = driver.find_element(By.CSS_SELECTOR, "#single-hotwords textarea")
        wait_for(driver, lambda d: box.get_attribute("value") == ", ".join(words))
        driver.find_element(By.CSS_SELECTOR, "#single-file input[type=file]").send_keys(str(files[0][0]))
        wait_for(driver, lambda d: files[0][0].stem in d.find_element(By.CSS_SELECTOR, "#single-file").text)
        driver.find_element(By.CSS_SELECTOR, "#single-start").click()
        wait_for(driver, lambda d: d.find_element(By.CSS_SELECTOR, "#single-text textarea").get_attribute("value"))

        # 验证: the shared utterances with a manifest, the list picked, the report downloaded
        open_tab(driver, "热词库")
        driver.find_element(By.XPATH, "//button[contains(., '验证热词效果')]").click()
        manifest = tmp_path / "manifest.tsv"
        manifest.write_text("".join(f"{p.name}\t{ref}\n" for p, ref in files), encoding="utf-8")
        wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#verify-files input[type=file]"))[0].send_keys(
            "\n".join(str(p) for p, _ in files)
        )
        wait_for(driver, lambda d: files[-1][0].stem in d.find_element(By.CSS_SELECTOR, "#verify-files").text)
        driver.find_element(By.CSS_SELECTOR, "#verify-manifest input[type=file]").send_keys(str(manifest))
        wait_for(driver, lambda d: "manifest" in d.find_element(By.CSS_SELECTOR, "#verify-manifest").text)
        choose(driver, "verify-list", "地名")
        driver.find_element(By.CSS_SELECTOR, "#verify-start").click()
        wait_for(driver, lambda d: "验证任务已提交" in d.find_element(By.CSS_SELECTOR, "#verify-status").text)

        def finished(d) -> bool:
            d.find_element(By.CSS_SELECTOR, "#verify-refresh").click()
            return f"已完成 {len(files)}/{len(files)}" in d.find_element(By.CSS_SELECTOR, "#verify-status").text

        wait_for(driver, finished, timeout=180)
        links = wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#verify-downloads a[href*='.html']"))
        status = driver.find_element(By.CSS_SELECTOR, "#verify-status").text
        assert "CER" in status and "召回率" in status
        driver.save_screenshot(str(SCREENSHOT_DIR / "verification.png"))
        cookie = driver.get_cookie("paraformer_owner")
        report = httpx.get(links[0].get_attribute("href"), cookies={cookie["name"]: cookie["value"]})
        assert report.status_code == 200 and "<svg" in report.text and words[0] in report.text
        assert httpx.get(links[0].get_attribute("href")).status_code == 404  # the report is this browser's
    except Exception:
        driver.save_screenshot(str(tmp_path / "failure.png"))
        print("failure screenshot:", tmp_path / "failure.png")
        raise
    finally:
        driver.quit()
