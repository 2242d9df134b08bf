import streamlit as st

from alexnet_core import locations
from alexnet_core.pretrained import install
from alexnet_ui import glossary
from alexnet_ui import models_view as view
from alexnet_ui.navigation import page_setup
from alexnet_ui.text import plain
from alexnet_ui.widgets import device_banner

page_setup("Models", "The real AlexNet, trained on ImageNet's 1,000 classes, from its published sources, and "
           "image classifiers of your own. Each is kept in "
           f"{plain(str(locations.models_root()), 200)} and named on every page and in every command.")
view.tidy_once()

st.subheader("ImageNet AlexNets", help=glossary.helps("ImageNet", "top-1", "top-5", "ONNX", "checksum"))
view.messages("sources")
for row in install.status():
    view.source_card(row)

st.subheader("Open a model of your own", help=glossary.helps("class", "preprocessing", "Grad-CAM"))
view.messages("own")
view.open_own_model()

st.subheader("Installed models", help=glossary.helps("fine-tuning", "checksum"))
view.messages("installed")
view.installed_list()

device_banner()
