import streamlit as st

from pages.common import page_setup, device_banner, device_info, format_bytes

page_setup()
st.title("AlexNet Explorer")
st.markdown(
    "See, train and question AlexNet, the network that won ImageNet 2012, in every published "
    "variant. Inspect each layer's shape, parameters and compute, and compare the paper's "
    "design choices side by side."
)

info = device_info()
cols = st.columns(3)
cols[0].metric("Device", info["kind"])
cols[1].metric("Name", info["name"])
cols[2].metric("Memory", format_bytes(info["memory_bytes"]))
if info["kind"] == "CPU":
    st.caption("No GPU found: everything works on the CPU; the `compact` variant is sized for it.")

st.subheader("Where to go")
st.page_link("pages/architecture.py", label="**Architecture**: every AlexNet variant layer by "
             "layer, with parameter and compute counts, a diagram and comparisons",
             icon=":material/account_tree:")

device_banner()
