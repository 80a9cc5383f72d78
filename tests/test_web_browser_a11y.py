"""The web app in Chromium as a keyboard user, a screen-reader user and a phone would use it.

Long file names on narrow and wide screens, the keyboard (Cancel during progress, focus after
Submit and Delete, the skip link, arrow keys on the tabs), axe-core on every page with data in
it, in the light and the dark theme, and what a photo card downloads.

Shares the stack (gearmand, a worker, the web app) of ``test_web_browser``. axe-core comes
from the ``axe-playwright-python`` package, which bundles its script: nothing is downloaded.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, BrowserContext, Page, expect
from test_web_browser import SHOTS, WAIT_MS, Stack, browser, page, photo, stack

pytestmark = pytest.mark.browser
__all__ = ["browser", "page", "stack"]  # fixtures shared with test_web_browser

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 860}
#: What a phone camera names its photos, and a name of 100 characters (the longest the app keeps).
CAMERA_NAME = "PXL_20240612_153012345.jpg"
LONG_NAME = "HARBOUR_AT_DAWN_FROM_THE_NORTH_PIER_WITH_THE_OLD_LIGHTHOUSE_AND_THREE_FISHING_BOATS_IN_2024_6_12.JPG"
AXE = Axe()


def context(browser: Browser, **kw: Any) -> BrowserContext:
    made = browser.new_context(**kw)
    made.set_default_timeout(WAIT_MS)
    return made


def upload(p: Page, *files: Path) -> None:
    p.set_input_files("#file-input", [str(f) for f in files])


def done_card(p: Page, name: str) -> Any:
    card = p.locator(".photo", has_text=name).first
    expect(card).to_have_attribute("data-state", "done", timeout=WAIT_MS)
    return card


def focused(p: Page) -> str:
    """What has the keyboard focus: its id, else its tag and text."""
    return str(
        p.evaluate("""() => { const a = document.activeElement, text = (a.textContent || '').trim().slice(0, 40);
                              return a.id || `${a.tagName.toLowerCase()}:${text}`; }""")
    )


def within_screen(p: Page, locator: Any, width: int) -> None:
    box = locator.bounding_box()
    assert box is not None, f"{locator} is not shown"
    assert box["x"] >= 0 and box["x"] + box["width"] <= width, f"{locator} is off screen: {box}"


# -- long file names ---------------------------------------------------------------------------


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["390px", "1280px"])
def test_long_file_names_never_widen_the_photos_page(
    stack: Stack, browser: Browser, tmp_path: Path, viewport: dict[str, int]
) -> None:
    """A phone camera's name and a 100-character one: no sideways scroll, Done and Delete on screen."""
    ctx = context(browser, viewport=viewport)
    p = ctx.new_page()
    try:
        p.goto(f"{stack.url}/#photos")
        upload(p, photo(tmp_path / CAMERA_NAME, 900, 600, 20), photo(tmp_path / LONG_NAME, 600, 900, 90))
        for name in (CAMERA_NAME, LONG_NAME):
            card = done_card(p, name)
            within_screen(p, card.locator(".photo-state"), viewport["width"])
            within_screen(p, card.get_by_role("button", name=f"Delete {name}"), viewport["width"])
        width = p.evaluate("document.scrollingElement.scrollWidth")
        assert width <= viewport["width"], f"the Photos page is {width} px wide at {viewport['width']} px"
        p.screenshot(path=str(SHOTS / f"photos-long-names-{viewport['width']}.png"), full_page=True)
    finally:
        ctx.close()


# -- the keyboard ------------------------------------------------------------------------------


def test_cancel_can_be_pressed_by_keyboard_on_a_job_that_reports_progress(stack: Stack, page: Page) -> None:
    """The row of a running job is updated at each progress event; the Cancel button keeps the focus."""
    page.goto(f"{stack.url}/#jobs")
    expect(page.locator("#function option[value=slow]")).to_have_count(1)
    page.select_option("#function", "slow")
    page.fill("#payload", "30")  # 30 s, progress every second
    page.click("#submit")
    row = page.locator("#job-rows tr", has_text="slow")
    expect(row).to_have_attribute("data-state", "running")
    expect(row.locator("td[data-label=Progress]")).to_contain_text("/30")
    cancel = row.get_by_role("button", name=re.compile("^Cancel"))
    cancel.focus()
    shown = row.locator("td[data-label=Progress]").inner_text()
    expect(row.locator("td[data-label=Progress]")).not_to_have_text(shown, timeout=5000)  # a progress event came
    assert page.evaluate("document.activeElement.classList.contains('cancel')"), focused(page)
    page.keyboard.press("Enter")
    expect(row).to_have_attribute("data-state", "cancelled")
    assert focused(page) != "body:" and page.evaluate("document.activeElement !== document.body")


def test_focus_stays_on_submit_after_submitting(stack: Stack, page: Page) -> None:
    page.goto(f"{stack.url}/#jobs")
    expect(page.locator("#function option[value=echo]")).to_have_count(1)
    page.select_option("#function", "echo")
    page.fill("#payload", "from the keyboard")
    page.focus("#submit")
    page.keyboard.press("Enter")
    expect(page.locator('#job-rows tr[data-state="done"]')).to_have_count(1)
    expect(page.locator("#job-form")).not_to_have_attribute("aria-busy", "true")
    assert focused(page) == "submit"
    page.keyboard.press("Enter")  # and it submits again from there
    expect(page.locator('#job-rows tr[data-state="done"]')).to_have_count(2)


def test_focus_moves_to_the_next_photo_after_delete(stack: Stack, page: Page, tmp_path: Path) -> None:
    page.goto(f"{stack.url}/#photos")
    upload(page, photo(tmp_path / "first.jpg", 300, 200, 10))
    done_card(page, "first.jpg")
    upload(page, photo(tmp_path / "second.jpg", 300, 200, 50))
    second = done_card(page, "second.jpg")  # newest first: second, then first
    second.get_by_role("button", name="Delete second.jpg").focus()
    page.keyboard.press("Enter")
    expect(second).to_have_count(0)
    assert page.evaluate("document.activeElement !== document.body"), "focus fell to the page"
    assert page.evaluate("document.activeElement.closest('.photo')?.textContent.includes('first.jpg')"), focused(page)
    page.locator(".photo", has_text="first.jpg").get_by_role("button", name="Delete first.jpg").focus()
    page.keyboard.press("Enter")
    expect(page.locator(".photo", has_text="first.jpg")).to_have_count(0)
    assert page.evaluate("document.activeElement !== document.body"), "focus fell to the page"


def test_the_first_tab_stop_is_a_skip_link_to_the_page_content(stack: Stack, page: Page) -> None:
    page.goto(f"{stack.url}/#jobs")
    expect(page.locator("#function option[value=echo]")).to_have_count(1)
    page.keyboard.press("Tab")
    skip = page.locator(":focus")
    expect(skip).to_have_text("Skip to content")
    expect(skip).to_be_visible()  # shown once focused
    page.keyboard.press("Enter")
    assert page.evaluate("document.getElementById('page-jobs').contains(document.activeElement)"), focused(page)
    assert page.evaluate("location.hash") == "#jobs"  # the tab stays
    page.keyboard.press("Tab")
    assert page.evaluate("document.getElementById('page-jobs').contains(document.activeElement)"), focused(page)


def test_the_tabs_follow_the_arrow_keys_home_and_end(stack: Stack, page: Page) -> None:
    page.goto(f"{stack.url}/#photos")
    tabs = page.get_by_role("tab")
    expect(tabs).to_have_count(6)
    page.focus("#tab-photos")
    for key, tab, section in (
        ("ArrowRight", "jobs", "jobs"),
        ("ArrowRight", "servers", "servers"),
        ("ArrowRight", "queues", "queues"),
        ("ArrowRight", "workers", "workers"),
        ("ArrowRight", "failed", "failed"),
        ("ArrowRight", "photos", "photos"),  # round again
        ("ArrowLeft", "failed", "failed"),
        ("Home", "photos", "photos"),
        ("End", "failed", "failed"),
    ):
        page.keyboard.press(key)
        assert focused(page) == f"tab-{tab}", key
        expect(page.locator(f"#tab-{tab}")).to_have_attribute("aria-selected", "true")
        expect(page.locator(f"#page-{section}")).to_be_visible()
        assert page.evaluate("location.hash") == f"#{tab}"
    # One tab stop for the whole tab list: the selected tab.
    assert [t.get_attribute("tabindex") for t in tabs.all()] == ["-1", "-1", "-1", "-1", "-1", "0"]
    page.keyboard.press("Tab")
    assert not focused(page).startswith("tab-")


# -- the dark theme ----------------------------------------------------------------------------


def luminance(css: str) -> float:
    r, g, b = (int(x) for x in re.findall(r"\d+", css)[:3])
    return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255


def test_the_theme_follows_the_systems_colour_scheme(stack: Stack, browser: Browser) -> None:
    for scheme, dark in (("dark", True), ("light", False)):
        ctx = context(browser, color_scheme=scheme)
        p = ctx.new_page()
        try:
            p.goto(f"{stack.url}/#jobs")
            # The page's background is the root element's; then a card's, and the heading's text.
            colours = p.evaluate("""() => [
                getComputedStyle(document.documentElement).backgroundColor,
                getComputedStyle(document.querySelector('.card')).backgroundColor,
                getComputedStyle(document.querySelector('h1')).color]""")
            page_bg, card_bg, heading = (luminance(c) for c in colours)
            if dark:
                assert page_bg < 0.2 and card_bg < 0.3 and heading > 0.8, colours
            else:
                assert page_bg > 0.9 and card_bg > 0.9 and heading < 0.3, colours
            p.screenshot(path=str(SHOTS / f"jobs-{scheme}.png"), full_page=True)
        finally:
            ctx.close()


# -- axe-core ----------------------------------------------------------------------------------


def axe_problems(p: Page, where: str, found: dict[str, list[str]]) -> None:
    """Run axe-core on the page as it is; record every violation, by impact, under ``where``."""
    for v in AXE.run(p).response["violations"]:
        targets = [" ".join(n["target"]) for n in v["nodes"]][:4]
        found.setdefault(v["impact"] or "unknown", []).append(f"{where}: {v['id']} on {targets}")


@pytest.fixture
def with_data(stack: Stack, browser: Browser, tmp_path: Path) -> Iterator[None]:
    """Photos (done and failed) and jobs (done, failed, background, waiting) in the app before axe looks."""
    ctx = context(browser)
    p = ctx.new_page()
    try:
        p.goto(f"{stack.url}/#photos")
        broken = tmp_path / "axe-broken.jpg"
        broken.write_bytes(photo(tmp_path / "whole.jpg", 400, 300, 0).read_bytes()[:300])
        upload(p, photo(tmp_path / CAMERA_NAME, 1200, 800, 40), broken)
        done_card(p, CAMERA_NAME)
        failed = p.locator(".photo", has_text="axe-broken.jpg").first
        expect(failed).to_have_attribute("data-state", "failed", timeout=WAIT_MS)
        yield
    finally:
        ctx.close()


def fill_jobs(p: Page) -> None:
    """Rows in several states on this page (job rows belong to the page that submitted them)."""
    p.goto(f"{p.url.split('#')[0]}#jobs")
    expect(p.locator("#function option[value=echo]")).to_have_count(1)
    for function, payload, mode in (
        ("echo", "hello", "foreground"),
        ("echo", "a result that scrolls in its cell\n" * 30, "foreground"),
        ("fail", "x", "foreground"),
        ("slow", "20", "foreground"),
        ("slow", "1", "background"),
    ):
        p.select_option("#function", function)
        p.fill("#payload", payload)
        p.check(f"input[name=mode][value={mode}]")
        p.click("#submit")
        expect(p.locator("#job-form")).not_to_have_attribute("aria-busy", "true")
    expect(p.locator('#job-rows tr[data-state="running"]').first).to_be_visible()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_no_serious_or_critical_axe_violation_on_any_page(
    stack: Stack, browser: Browser, with_data: None, scheme: str
) -> None:
    """axe-core on Photos, Jobs, Servers and the login page, on a desktop and a phone, with data shown."""
    found: dict[str, list[str]] = {}
    for name, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        ctx = context(browser, viewport=viewport, color_scheme=scheme)
        p = ctx.new_page()
        try:
            p.goto(f"{stack.url}/#photos")
            done_card(p, CAMERA_NAME)
            axe_problems(p, f"photos/{name}/{scheme}", found)
            fill_jobs(p)
            axe_problems(p, f"jobs/{name}/{scheme}", found)
            p.goto(f"{stack.url}/#servers")
            expect(p.locator("section.server .badge").first).to_have_text("up")
            axe_problems(p, f"servers/{name}/{scheme}", found)
            p.goto(f"{stack.url}/login")
            axe_problems(p, f"login/{name}/{scheme}", found)
        finally:
            ctx.close()
    print(f"axe-core, {scheme} theme:", {impact: len(items) for impact, items in found.items()} or "no violations")
    for impact, items in found.items():
        for item in items:
            print(f"  {impact}: {item}")
    assert not found.get("serious") and not found.get("critical"), found


# -- what a photo card downloads ---------------------------------------------------------------


LAYOUT_SHIFT = """new PerformanceObserver((list) => {
    for (const e of list.getEntries()) if (!e.hadRecentInput) window.__cls = (window.__cls || 0) + e.value;
}).observe({type: "layout-shift", buffered: true});"""


def test_a_photo_card_downloads_only_its_smallest_copy_and_nothing_moves_while_the_page_loads(
    stack: Stack, browser: Browser, tmp_path: Path
) -> None:
    """Thumbnails of 170x120 come from the smallest copy (srcset/sizes), lazily, with width and height set."""
    ctx = context(browser, viewport=DESKTOP)
    ctx.add_init_script(LAYOUT_SHIFT)
    p = ctx.new_page()
    try:
        p.goto(f"{stack.url}/#photos")
        upload(p, photo(tmp_path / "weighed.jpg", 2400, 1600, 120))
        photo_id = done_card(p, "weighed.jpg").get_attribute("data-photo")
        fetched: list[tuple[str, int]] = []
        p.on("requestfinished", lambda r: fetched.append((r.url, r.sizes()["responseBodySize"])))
        p.reload()
        card = done_card(p, "weighed.jpg")  # the newest photo: the first card, on screen
        card.locator(".copy img").first.evaluate("(i) => i.decode()")
        expect(card.locator(".copy img")).to_have_count(4)
        for img in card.locator(".copy img").all():
            img.evaluate("(i) => i.decode()")  # loaded (lazily: it is on screen)
        copies = sorted({u.split(f"/photos/{photo_id}/")[1] for u, _ in fetched if f"/photos/{photo_id}/" in u})
        assert copies == ["3"], f"copies fetched for one card: {copies}"  # 256 px: the smallest of four
        for img in card.locator(".copy img").all():
            assert img.get_attribute("width") and img.get_attribute("height")
            assert img.get_attribute("loading") == "lazy" and img.get_attribute("srcset")
            assert img.evaluate("(i) => i.currentSrc.endsWith('/3')")
        shift = p.evaluate("window.__cls || 0")
        assert shift < 0.05, f"cumulative layout shift {shift:.3f} while the Photos page loaded"
    finally:
        ctx.close()
