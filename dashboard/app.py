"""The dashboard's router (`streamlit run dashboard/app.py`): st.navigation over one plain
script per page in dashboard/pages/. Pages call rlhf only; they hold no algorithm code."""

from pathlib import Path

import streamlit as st

PAGES = Path(__file__).parent / "pages"

st.set_page_config(page_title="RLHF Lab", layout="wide")
page = st.navigation([st.Page(PAGES / "home.py", title="Home", default=True)])
page.run()
