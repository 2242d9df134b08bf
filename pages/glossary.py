import streamlit as st

from alexnet_ui import glossary
from alexnet_ui.navigation import page_setup
from alexnet_ui.text import plain
from alexnet_ui.widgets import device_banner

page_setup("Glossary", "Every term the pages use, in one plain-English line each. The same lines appear as "
           "tooltips (the ? beside a figure or a setting).")

query = st.text_input("Find a term", placeholder="MACs, fc7, t-SNE, bf16, top-5...", key="glossary_find").strip()
shown = glossary.search(query)
if shown:  # a list, not a table: every line wraps and reads whole at any width
    st.markdown("\n".join(f"- **{plain(term)}**: {plain(line)}" for term, line in shown.items()))
else:
    st.info(f"No term matches '{query}'. Try a shorter word, or clear the box to see every term.",
            icon=":material/search_off:")

device_banner()
