"""The playground's page in headless Chromium: pick a run, generate (the CLI's text), two runs side by side, a
token's tooltip, a refusal and a busy playground (503) in the page. The runs and servers are
test_playground.py's."""

from __future__ import annotations

from urllib.parse import quote

import test_playground as shared  # skips this module too when the playground extra is not installed
from conftest import assert_no_errors
from test_playground import BUSY, cli, leave, open_stream

import picollm.serve.playground as playground
from picollm.study.pages import playground_href

runs, server, one_slot = shared.runs, shared.server, shared.one_slot  # the fixtures: two tiny runs, the servers


# --------------------------------------------------------------------------------------------------
# real browser
# --------------------------------------------------------------------------------------------------
def open_playground(driver, url: str, runs_listed: int) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    rows = lambda d: len(d.find_elements("css selector", "#runs tbody tr"))
    WebDriverWait(driver, 20).until(lambda d: rows(d) == runs_listed)


def fill(driver, prompt: str, **settings) -> None:
    from selenium.webdriver.common.by import By

    box = driver.find_element(By.ID, "prompt")
    box.clear()
    box.send_keys(prompt)
    for name, value in settings.items():
        field = driver.find_element(By.CSS_SELECTOR, f"#settings input[name={name}]")
        if field.get_attribute("type") == "checkbox":
            if field.is_selected() != value:
                field.click()
        else:
            field.clear()
            field.send_keys(str(value))


def generated(driver, pane: str) -> str:
    """Wait for the pane's stream to end; its text as shown (textContent: whitespace kept)."""
    from selenium.webdriver.support.ui import WebDriverWait

    state = f"return document.getElementById('pane-{pane}').dataset.state"
    WebDriverWait(driver, 60).until(lambda d: d.execute_script(state) in ("done", "error"))
    error = driver.find_element("css selector", f"#pane-{pane} .error")
    assert driver.execute_script(state) == "done", error.text
    return driver.execute_script(f"return document.querySelector('#pane-{pane} .output').textContent")


def test_page_streams_the_cli_text(server, runs, browser):
    from selenium.webdriver.common.by import By

    run = runs["transformer"]
    link = playground_href(f"{server.base}/?run={{run}}", run.name)  # the report's link to the run
    open_playground(browser, link, len(runs))
    assert browser.find_element(By.CSS_SELECTOR, "#pane-a .run-name").text == run.name  # preselected
    assert not browser.find_element(By.ID, "pane-b").is_displayed()
    # every DecodeConfig field, with its default and its help
    for f in playground.setting_fields():
        field = browser.find_element(By.CSS_SELECTOR, f"#settings input[name={f['name']}]")
        assert f["help"] in field.find_element(By.XPATH, "..").get_attribute("title")
        if f["kind"] != "bool":
            assert field.get_attribute("value") == str(f["default"])
    settings = dict(seed=11, max_new_tokens=30, temperature=0.9, top_k=8)
    fill(browser, "the dog", **settings)
    browser.find_element(By.ID, "generate").click()
    assert generated(browser, "a") == cli(run, "the dog", **settings)[1]
    assert len(browser.find_elements(By.CSS_SELECTOR, "#pane-a .tok")) == 30
    assert "mean log-prob" in browser.find_element(By.CSS_SELECTOR, "#pane-a .meta").text
    assert_no_errors(browser)


def test_two_runs_side_by_side_and_the_tooltip(server, runs, browser):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    open_playground(browser, server.base + "/", len(runs))
    search = browser.find_element(By.ID, "run-search")
    search.send_keys("LSTM")  # the list is searchable: the lstm run only
    rows = browser.find_elements(By.CSS_SELECTOR, "#runs tbody tr")
    assert [r.get_attribute("data-run") for r in rows] == [runs["lstm"].name]
    rows[0].find_element(By.CSS_SELECTOR, "button[data-pane=b]").click()
    search.clear()
    search.send_keys("transformer")
    browser.find_element(By.CSS_SELECTOR, "#runs tbody tr button[data-pane=a]").click()
    Select(browser.find_element(By.CSS_SELECTOR, "#pane-b .checkpoint")).select_by_value("last")
    assert "b=" + quote(runs["lstm"].name) in browser.current_url
    settings = dict(seed=5, max_new_tokens=20, temperature=1.0, stop_at_eos=False)
    fill(browser, "one fish", **settings)
    browser.find_element(By.ID, "generate").click()
    assert generated(browser, "a") == cli(runs["transformer"], "one fish", **settings)[1]
    assert generated(browser, "b") == cli(runs["lstm"], "one fish", "last", **settings)[1]

    tip = browser.find_element(By.ID, "tip")
    assert not tip.is_displayed()
    tok = browser.find_elements(By.CSS_SELECTOR, "#pane-b .tok")[3]
    ActionChains(browser).move_to_element(tok).perform()
    assert tip.is_displayed()
    lines = tip.text.split("\n")
    assert lines[1].startswith("logprob -") and lines[2].startswith("top-5: ")
    assert lines[3].startswith("neighbours: ")
    assert lines[2].count(", ") == 4 and lines[3].count(", ") == 4
    assert_no_errors(browser)


def test_a_refusal_shows_in_the_page(server, runs, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    open_playground(browser, f"{server.base}/?run={runs['lstm'].name}", len(runs))
    fill(browser, "the cat", temperature=-1)
    browser.find_element(By.ID, "generate").click()
    error = browser.find_element(By.CSS_SELECTOR, "#pane-a .error")
    WebDriverWait(browser, 30).until(lambda d: error.text)
    assert error.text == "--temperature must be a finite number >= 0; got -1.0"
    fill(browser, "", temperature=1)
    browser.execute_script("document.getElementById('prompt').value = 'x'.repeat(arguments[0])",
                           playground.MAX_PROMPT_CHARS + 1)
    browser.find_element(By.ID, "generate").click()
    WebDriverWait(browser, 30).until(lambda d: "at most" in error.text)
    assert error.text == "the prompt is 4,001 characters long; the playground takes at most 4,000"
    open_playground(browser, f"{server.base}/?run=..%2Fnope", len(runs))
    assert "no run" in browser.find_element(By.CSS_SELECTOR, "#pane-a .error").text


def test_a_busy_playground_shows_in_the_page(one_slot, runs, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    server, _, _ = one_slot
    first, status, _ = open_stream(server, runs["lstm"].name)  # takes the one slot
    assert status == 200
    open_playground(browser, f"{server.base}/?run={runs['transformer'].name}", len(runs))
    fill(browser, "the cat")
    browser.find_element(By.ID, "generate").click()
    error = browser.find_element(By.CSS_SELECTOR, "#pane-a .error")
    WebDriverWait(browser, 30).until(lambda d: error.text)
    assert error.text == BUSY
    leave(first)
