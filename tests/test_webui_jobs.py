"""The jobs UI: the batch tab's files submitted as a job survive a page reload and finish; the 📋 Jobs tab
lists only this browser's jobs (its owner cookie), in both languages. Unit tests of the helpers, and a real browser run
(headless Chromium; skipped without one) that saves docs/screenshots/jobs.png with SCREENSHOT_DIR."""

from __future__ import annotations

import re
import secrets
import shutil
import tempfile
from pathlib import Path

import pytest

from asr.engine import Engine
from conftest import DATA, SCREENSHOT_DIR, Server, missing_tool, service_settings
from jobs import JobService
from jobs.service import Upload
from results import Owner, ResultAccess
from webui.jobs import build_downloads, detail, job_rows

UTTERANCES = sorted((DATA / "utterances").glob("*.wav"))


def test_rows_detail_and_downloads_in_both_languages(engine: Engine, tmp_path: Path) -> None:
    settings = service_settings(engine, tmp_path)
    service = JobService(settings, engine)
    access = ResultAccess.from_settings(settings)
    owner, stranger = Owner.session(secrets.token_urlsafe(32)), Owner.session(secrets.token_urlsafe(32))
    job = service.submit(
        owner,
        [Upload(UTTERANCES[0].name, UTTERANCES[0]), Upload("bad.wav", DATA / "bad" / "not_audio.wav")],
        source="ui",
    )
    [row] = job_rows([job], "zh")
    assert row[3] == "⏳ 排队中" and row[2] == "0/2"
    service.run_job(job.id)  # the worker's code, in this thread
    assert service.get(job.id, stranger) is None and service.list(stranger) == []  # another browser
    job = service.get(job.id, owner)
    text, table, files = detail(service, access, owner, job, "en")
    assert "done" in text and "1/2" in text
    assert table["data"][0][3] and "not a readable" in table["data"][1][2]
    assert sorted(Path(f).suffix for f in files) == [".csv", ".zip"]
    assert build_downloads(service, access, owner, job) == files  # written once, then reused
    # The downloads are an owned result: its owner may fetch them, nobody else.
    [result] = access.store.list(owner, kind="job")
    assert result.info["job"] == job.id and Path(files[1]).parent == result.folder
    assert access.store.list(stranger, kind="job") == []
    assert job_rows([job], "en")[0][3] == "✅ done"


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.mark.browser
def test_a_batch_job_survives_a_reload_and_finishes(server: Server, tmp_path: Path) -> None:
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip(missing_tool("chromium/chromedriver", "apt-get install chromium chromium-driver"))
    from selenium.webdriver.common.by import By

    from test_webui_browser import make_driver, open_tab, wait_for

    def text(d, css: str) -> str:
        return d.find_element(By.CSS_SELECTOR, css).get_attribute("textContent") or ""

    driver = make_driver("zh-CN", Path(tempfile.mkdtemp(dir=tmp_path)))
    try:
        driver.get(server.url)
        wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#single-start"))
        open_tab(driver, "批量处理")
        files = [*UTTERANCES[:3], DATA / "bad" / "random_bytes.mp3"]
        driver.find_element(By.CSS_SELECTOR, "#batch-files input[type=file]").send_keys("\n".join(map(str, files)))
        wait_for(driver, lambda d: "random_bytes" in d.find_element(By.CSS_SELECTOR, "#batch-files").text)
        driver.find_element(By.CSS_SELECTOR, "#batch-submit-job").click()
        # The page switches to the jobs tab, which lists the new job.
        wait_for(driver, lambda d: "job_" in text(d, "#jobs-summary"))
        driver.refresh()  # the job lives on the server; the browser keeps only its token
        wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#single-start"))
        open_tab(driver, "后台任务")
        wait_for(driver, lambda d: "✅ 完成" in text(d, "#jobs-summary"), timeout=90)
        assert "3/4" in text(driver, "#jobs-summary")
        assert "失败" in text(driver, "#jobs-files")
        wait_for(driver, lambda d: ".zip" in text(d, "#jobs-downloads"))
        SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(SCREENSHOT_DIR / "jobs.png"))
        short_id = re.search(r"job_([0-9a-f]{12})", text(driver, "#jobs-summary")).group(1)  # as the table shows it
        other = make_driver("en-US", Path(tempfile.mkdtemp(dir=tmp_path)))  # another browser sees none of it
        try:
            other.get(server.url)
            wait_for(other, lambda d: d.find_elements(By.CSS_SELECTOR, "#single-start"))
            open_tab(other, "Jobs")
            # The tab's refresh answers with this browser's jobs: none (its timer only ticks while one is running).
            wait_for(other, lambda d: "No jobs from this browser yet" in text(d, "#jobs-summary"))
            assert short_id not in text(other, "#jobs-table") + text(other, "#jobs-select")
        finally:
            other.quit()
    finally:
        driver.quit()
