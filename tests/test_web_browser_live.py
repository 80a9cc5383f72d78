"""Live updates in Chromium: bursts of jobs from the page, each one's last event on time.

Shares the stack (gearmand, a worker, the web app) of ``test_web_browser``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect
from test_web_browser import Stack, _stop, browser, page, stack, start_web

pytestmark = pytest.mark.browser
__all__ = ["browser", "page", "stack"]  # fixtures shared with test_web_browser

BURSTS = 20
COPIES = 100
#: From the click on Submit to the last row of the burst shown done.
LATE_S = 3.0

# One burst through the form: the seconds from the click to the moment every row of it is shown done
# (each row changes when its event arrives), or null when that has not happened after 10 s.  The burst
# ends once the form has also read its answer (Submit usable again), so the next click is not lost.
BURST = """([payload, copies]) => new Promise((resolve) => {
    document.getElementById("clear-jobs").click();
    document.getElementById("payload").value = payload;
    const rows = document.getElementById("job-rows");
    const submit = document.getElementById("submit");
    const done = () => rows.querySelectorAll('tr[data-state="done"]').length === copies;
    const idle = () => !submit.disabled && submit.getAttribute("aria-disabled") !== "true";
    let took = null;
    const t0 = performance.now();
    const end = () => { seen.disconnect(); clearTimeout(timer); resolve(took); };
    const seen = new MutationObserver(() => {
        if (took === null && done()) took = (performance.now() - t0) / 1000;
        if (took !== null && idle()) end();
    });
    const timer = setTimeout(end, 10000);
    seen.observe(rows, {subtree: true, childList: true, attributes: true});
    seen.observe(submit, {attributes: true});
    submit.click();
})"""


@pytest.fixture(scope="module")
def roomy(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A second web app on the stack's gearmand whose rate limit leaves room for 2,000 jobs a minute and more."""
    folder = tmp_path_factory.mktemp("roomy")
    settings = folder / "settings.py"
    settings.write_text("WEB_RATE_LIMIT = 100_000\n")
    web, url = start_web(
        [stack.gearmand.address], stack.logs / "web-roomy.log", "--settings", str(settings), storage=folder / "photos"
    )
    yield url
    _stop(web)


@pytest.mark.timeout(300)  # a late burst is given up on after 10 s
def test_every_burst_of_jobs_has_its_last_event_within_3_s_of_its_post(roomy: str, page: Page) -> None:
    """20 bursts of 100 echo jobs from the page, one event stream open: none waits for the 15 s heartbeat."""
    page.goto(f"{roomy}/#jobs")
    expect(page.locator("#function option[value=echo]")).to_have_count(1)
    page.select_option("#function", "echo")
    page.fill("#copies", str(COPIES))
    took = [page.evaluate(BURST, [f"burst {i}", COPIES]) for i in range(BURSTS)]
    late = [(i, t) for i, t in enumerate(took) if t is None or t > LATE_S]
    assert late == [], f"bursts whose last event came late (burst, seconds): {late}; all: {took}"
    print(f"last event of each burst after its POST: median {sorted(took)[BURSTS // 2]:.2f} s, max {max(took):.2f} s")
