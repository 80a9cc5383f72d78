"""The login in Chromium: it keeps the page's tab, wrong passwords get 429, logout ends the cookie.

Shares the gearmand and worker of ``test_web_browser``; the web app here has a password.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect
from test_web_browser import Stack, _stop, browser, page, stack, start_web

from gearworker.web.login import hash_password

pytestmark = pytest.mark.browser
__all__ = ["browser", "page", "stack"]  # fixtures shared with test_web_browser

PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def guarded(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A web app on the stack's gearmand that asks for a password."""
    folder = tmp_path_factory.mktemp("guarded")
    settings = folder / "settings.py"
    settings.write_text(f"WEB_PASSWORD_HASH = {hash_password(PASSWORD, n=2**12)!r}\n")
    web, url = start_web(
        [stack.gearmand.address], stack.logs / "web-guarded.log", "--settings", str(settings), storage=folder / "p"
    )
    yield url
    _stop(web)


def log_in(page: Page, password: str) -> None:
    page.fill("#password", password)
    page.click("button[type=submit]")


def test_logging_in_from_the_jobs_tab_lands_on_the_jobs_tab(guarded: str, page: Page) -> None:
    page.goto(f"{guarded}/#jobs")
    expect(page).to_have_url(f"{guarded}/login#jobs")  # the redirect keeps the tab
    log_in(page, PASSWORD)
    expect(page).to_have_url(f"{guarded}/#jobs")
    expect(page.locator("#page-jobs")).to_be_visible()
    expect(page.locator("#tab-jobs")).to_have_attribute("aria-selected", "true")


def test_a_login_cookie_is_refused_after_logout(browser: Browser, guarded: str) -> None:
    context = browser.new_context()
    page = context.new_page()
    try:
        page.goto(f"{guarded}/login")
        log_in(page, PASSWORD)
        expect(page.locator("#logout")).to_be_visible()
        cookie = next(c for c in context.cookies() if c["name"] == "gw_login")
        assert page.request.get(f"{guarded}/api/photos").status == 200
        page.click("#logout")
        expect(page).to_have_url(f"{guarded}/login")
        # The cookie as it was before logout (a copy, another tab, a thief).
        context.add_cookies([{"name": "gw_login", "value": cookie["value"], "url": guarded}])
        assert page.request.get(f"{guarded}/api/photos").status == 401
        page.goto(f"{guarded}/#photos")
        expect(page).to_have_url(f"{guarded}/login#photos")
    finally:
        context.close()


def test_the_eleventh_wrong_password_in_a_row_is_refused_with_429(browser: Browser, guarded: str) -> None:
    """Last in this file: the allowance is per client address, and every page here comes from 127.0.0.1."""
    context = browser.new_context()
    page = context.new_page()
    try:
        page.goto(f"{guarded}/login")
        statuses = []
        for i in range(11):
            with page.expect_response("**/api/login") as answer:
                log_in(page, f"wrong {i}")
            statuses.append(answer.value.status)
        assert statuses == [401] * 10 + [429]
        expect(page.locator("#login-error")).to_contain_text("Too many wrong passwords: try again in ")
    finally:
        context.close()
