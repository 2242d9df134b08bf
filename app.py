"""AlexNet Explorer: `streamlit run app.py`.

Streamlit runs this file twice over: imported once as the module `app` (it finds `app`, the
web server, below) and run as the page script `__main__` for every browser session.
"""

import streamlit as st

if __name__ == "__main__":
    # An emoji, not a Material icon: a Material page icon is fetched from a font server, and the app works offline.
    st.set_page_config(page_title="AlexNet Explorer", page_icon="🧠", layout="wide")

    PAGES = [
        st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
        st.Page("pages/architecture.py", title="Architecture", icon=":material/account_tree:"),
        st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
        st.Page("pages/evaluate.py", title="Evaluate", icon=":material/grid_on:"),
        st.Page("pages/classify.py", title="Classify", icon=":material/image_search:"),
        st.Page("pages/dataset.py", title="Your classes", icon=":material/add_photo_alternate:"),
        st.Page("pages/models.py", title="Models", icon=":material/deployed_code:"),
        st.Page("pages/runs.py", title="Runs", icon=":material/folder_open:"),
        st.Page("pages/claims.py", title="Question the paper", icon=":material/science:"),
        st.Page("pages/glossary.py", title="Glossary", icon=":material/menu_book:"),
    ]

    st.navigation(PAGES).run()
else:
    from starlette.middleware import Middleware

    from alexnet_ui import streamlit_internals
    from alexnet_ui.server import BaseUrlHint, warm_up_after_start

    app = st.App(__file__, middleware=[Middleware(BaseUrlHint)], lifespan=warm_up_after_start)
    # Before the first session: the pages above are this app's only pages (no legacy pages/ mode),
    # and Keras is not cleared after every run. Why, and on which Streamlit versions: that module.
    streamlit_internals.apply()
