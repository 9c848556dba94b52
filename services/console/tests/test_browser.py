"""In a real browser (Debian's chromium, driven by Selenium through chromium-driver), what an operator sees:
sign in, search a customer, open the timeline, redrive a dead letter, and see it applied without reloading.

SHOPBOTLY_CONSOLE_SCREENSHOTS=<dir> also saves the screenshots used in docs/console.md.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from shopbotly.common.events import ATTEMPTS_HEADER, CommandOutcome
from shopbotly.common.kafka import KafkaSettings
from shopbotly.common.topics import Topic
from shopbotly.testkit.console import OPERATOR_KEYS, console_settings, result, serve_in_thread

from .test_pages import publish, scenario

pytestmark = pytest.mark.integration

CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    if not (os.access(CHROMEDRIVER, os.X_OK) and os.access(CHROMIUM, os.X_OK)):
        pytest.skip("needs Debian's chromium and chromium-driver: apt-get install chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()


def shot(driver: WebDriver, name: str) -> None:
    folder = os.environ.get("SHOPBOTLY_CONSOLE_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(folder) / f"{name}.png"))


def see(driver: WebDriver, text: str, timeout_s: float = 15) -> None:
    try:
        WebDriverWait(driver, timeout_s).until(ec.text_to_be_present_in_element((By.TAG_NAME, "body"), text))
    except TimeoutException:
        body = driver.find_element(By.TAG_NAME, "body").text
        pytest.fail(
            f"{text!r} not shown within {timeout_s} s at {driver.current_url}; the page shows:\n{body}"
        )


async def test_an_operator_finds_a_customer_and_redrives_its_dead_letter(
    kafka_settings: KafkaSettings, browser: WebDriver
) -> None:
    records, bob_cmd = scenario(kafka_settings)
    await publish(kafka_settings, records)
    with serve_in_thread(console_settings(kafka_settings)) as console:
        browser.get(f"{console.url}/events")
        see(browser, "Operator key")
        shot(browser, "sign-in")
        browser.find_element(By.ID, "key").send_keys(OPERATOR_KEYS["admin"])
        browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
        see(browser, "Customer email")

        browser.find_element(By.NAME, "email").send_keys("bob@example.com", Keys.ENTER)
        see(browser, "1 event(s)")
        assert "jane@example.com" not in browser.find_element(By.ID, "live").text
        shot(browser, "events")

        browser.find_element(By.LINK_TEXT, "lead.created").click()
        see(browser, "Command: upsert_contact → hubspot")
        assert browser.find_element(By.ID, "outcome").text == "failed"
        assert "422 Unprocessable" in browser.find_element(By.CLASS_NAME, "timeline").text
        shot(browser, "timeline")

        browser.find_element(By.LINK_TEXT, "Dead letters").click()
        see(browser, "1 dead letter(s)")
        shot(browser, "dead-letters")
        browser.find_element(By.CSS_SELECTOR, "input[name=sel]").click()
        browser.find_element(By.ID, "redrive-selected").click()
        see(browser, "Redrive 1 dead letter(s)?")
        shot(browser, "redrive-confirm")
        browser.find_element(By.ID, "confirm-redrive").click()
        see(browser, "Redriven 1, skipped as applied 0")

        # crm-writer applies the redriven command; the open page shows it without a reload.
        browser.find_element(By.LINK_TEXT, "Back to dead letters").click()
        see(browser, "redriven")
        applied = result(bob_cmd, CommandOutcome.APPLIED, crm_ids={"contact": "502"})
        tries = {"tries": [{"n": 1, "at": "2026-12-07T10:00:00.000+00:00", "ms": 87.5, "outcome": "applied"}]}
        attempts = [(ATTEMPTS_HEADER, orjson.dumps(tries))]
        await publish(kafka_settings, [(Topic.CRM_RESULTS, bob_cmd.key(), applied.to_json(), attempts)])
        WebDriverWait(browser, 15).until(
            lambda d: d.find_element(By.CSS_SELECTOR, "#live .badge").text == "applied"
        )
        assert browser.find_element(By.ID, "live").get_attribute("data-refreshed-at")
        browser.find_element(By.LINK_TEXT, bob_cmd.causation_event_id).click()
        see(browser, "contact 502")
        assert browser.find_element(By.ID, "outcome").text == "applied"
        assert (
            "#1 2026-12-07T10:00:00.000+00:00 87.5 ms applied"
            in browser.find_element(By.CLASS_NAME, "tries").text
        )
        shot(browser, "timeline-applied")
