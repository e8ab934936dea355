"""/docs in a real browser (Debian's chromium, headless, driven by chromedriver): Swagger UI
renders the served app's operations from /openapi.json, with everything loaded from the
gateway itself (no other host: the page must work without internet)."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait

from pachyderm._embedded import EmbeddedFleet

from .conftest import gateway
from .serving import APP

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
DEPOSIT = "/entities/account/{id}/commands/Deposit"

if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)) and not os.environ.get("CI"):
    # CI installs them (.ci/run); elsewhere: apt-get install chromium chromium-driver.
    pytest.skip("Debian's chromium and chromium-driver are not installed", allow_module_level=True)


@contextmanager
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def rendered(base_url: str) -> tuple[list[str], str, list[str]]:
    """Opens /docs: the paths of the operations shown, the text of Deposit's operation once
    opened, and the URLs of every resource the page loaded."""
    with browser() as driver:
        driver.get(f"{base_url}/docs")
        wait = WebDriverWait(driver, 30)
        selector = f'.opblock-summary-path[data-path="{DEPOSIT}"]'
        deposit = wait.until(
            expected_conditions.element_to_be_clickable((By.CSS_SELECTOR, selector))
        )
        paths = [
            element.get_attribute("data-path") or ""
            for element in driver.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")
        ]
        operation = deposit.find_element(By.XPATH, "./ancestor::div[contains(@class, 'opblock ')]")
        operation.find_element(By.CSS_SELECTOR, ".opblock-summary-control").click()
        # Opened, it shows the body's example, made from the command's schema.
        wait.until(lambda _: "amount" in operation.text)
        opened = operation.text
        resources = driver.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)"
        )
        return paths, opened, [str(url) for url in resources]


async def test_the_docs_page_shows_the_apps_operations(fleet: EmbeddedFleet) -> None:
    async with gateway(fleet, APP) as http:
        page = await http.get("/docs")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        base_url = str(http.base_url).rstrip("/")
        # The browser blocks; the gateway answers it from this event loop meanwhile.
        paths, opened, resources = await asyncio.to_thread(rendered, base_url)
    assert DEPOSIT in paths
    assert "/entities/meter/{id}/queries/Exceeds" in paths
    assert "/entities/{type}/{id}/commands/{command}" in paths
    assert "amount" in opened
    assert resources, "the page loaded nothing"
    assert all(url.startswith(base_url + "/") for url in resources), resources


async def test_the_assets_are_served_by_the_gateway(http: httpx.AsyncClient) -> None:
    script = await http.get("/docs/assets/swagger-ui-bundle.js")
    assert script.status_code == 200
    assert "SwaggerUIBundle" in script.text
    assert (await http.get("/docs/assets/nothing.js")).status_code == 404
