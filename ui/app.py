"""The Streamlit entry point of the vidsearch UI: `vidsearch ui` runs `streamlit run` on this file.

It only sets up the page and the navigation; the pages are their own scripts (`search_page.py`,
`library_page.py`), which keeps each page's code in one place and lets `AppTest.switch_page` reach
them in the tests. Where to search comes from the environment (`VIDSEARCH_API_URL` for the search
API, else the local index `VIDSEARCH_DB`; `VIDSEARCH_API_KEY`), set by `vidsearch ui`.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from vidsearch.ui import cache
from vidsearch.ui.backend import BackendError

HERE = Path(__file__).resolve().parent
STYLE = """
<style>
mark { background: #fde68a; padding: 0 .1em; border-radius: .2em; }
.vs-span { font-size: .92rem; line-height: 1.4; }
.vs-src { color: #6b7280; font-size: .8rem; text-transform: uppercase; letter-spacing: .03em; }
</style>
"""

# no page or page_icon icons: Streamlit fetches material favicons from Google, which a closed network lacks
st.set_page_config(page_title="vidsearch", layout="wide")
st.markdown(STYLE, unsafe_allow_html=True)

try:
    where = cache.config().describe()
except (ValueError, BackendError, FileNotFoundError) as exc:  # a bad VIDSEARCH_* value or config file
    st.error(f"**The UI's settings are not valid.** {exc}", icon=":material/error:")
    st.stop()

pages = [
    st.Page(HERE / "search_page.py", title="Search", url_path="search", default=True),
    st.Page(HERE / "library_page.py", title="Library", url_path="library"),
]
navigation = st.navigation(pages)
st.sidebar.caption(f"Searching the {where}.")
navigation.run()
