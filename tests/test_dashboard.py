"""The dashboard router loads and shows its placeholder page without an exception."""

from pathlib import Path

from streamlit.testing.v1 import AppTest

APP = Path(__file__).resolve().parents[1] / "dashboard" / "app.py"


def test_home_page_renders_and_says_what_to_run():
    at = AppTest.from_file(str(APP), default_timeout=30).run()
    assert not at.exception
    assert at.title[0].value == "RLHF Lab"
    assert "later issue" in at.info[0].value
    assert "make demo" in at.code[0].value
