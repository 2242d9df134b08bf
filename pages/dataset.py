import streamlit as st

from alexnet_core.inputs import datasets
from alexnet_core.store import catalog
from alexnet_ui import dataset_view as view
from alexnet_ui.navigation import loaded_model_or_stop, page_setup, stop_page
from alexnet_ui.text import plain
from alexnet_ui.widgets import device_banner

root = datasets.data_root()
page_setup("Your classes", "Teach the network classes of your own: name them, add photos by upload or with the "
           "camera, train, then try it live. Each dataset is saved as an image folder in "
           f"{plain(str(root), 200)} (set ALEXNET_DATA_DIR to keep them elsewhere).")

choice = view.dataset_picker(root)
if choice == view.NEW:
    view.new_dataset_form(root)
    stop_page()
path = root / choice
found = datasets.classes(path)

st.subheader("1. Classes and images")
view.messages()
view.orphans_offer(path)
view.add_class_form(path)
if not found:
    st.info("No classes yet: add two or more above, then add a few photos of each.", icon=":material/category:")
damaged_files = view.class_cards(path, found)

st.subheader("2. Train")
view.train_section(path, found, damaged_files)
mine = view.runs_of_dataset(path)
if mine:
    view.latest_run(mine[0])

st.subheader("3. Try it live")
ready = [r for r in mine if r["has_model"] and not catalog.is_active(r)]
if not ready:
    st.info("Train a model on this dataset first; then show it a photo here.", icon=":material/info:")
    stop_page()
picked = st.selectbox("Model", [r["path"] for r in ready], key="dataset_try_model", format_func=lambda p: next(
    f"{catalog.display_name(r)} ({r['state']}, {r['epochs_done']} epochs)" for r in ready if r["path"] == p))
loaded, predictor = loaded_model_or_stop(picked)
view.try_it(loaded, predictor)

device_banner()
