import streamlit as st

from alexnet_core.analysis.charts import activation_memory, network_dot, params_and_macs
from alexnet_core.models.anatomy import totals
from alexnet_core.models.variants import get_arch
from alexnet_ui import architecture_view as view
from alexnet_ui.navigation import page_setup
from alexnet_ui.widgets import device_banner

page_setup("Architecture", "Pick a variant, flip the paper's design switches, and see what each layer costs.")

if view.what_to_show() == "installed":
    view.installed_model_view()
    device_banner()
    st.stop()

variant = view.variant_picker("Variant", "arch_variant")
arch = get_arch(variant)
with st.expander("Design switches", expanded=False, icon=":material/tune:"):
    switches = view.switch_form(variant, "arch")
table = view.load(variant, switches)
if table is None:
    st.stop()

sums = totals(table)
view.figures(table, sums)
view.published_check(variant, switches, sums)
st.info(f"**{arch.title}**. {arch.note}  \n*Source: {arch.source}*", icon=":material/menu_book:")

tab_table, tab_charts, tab_time, tab_diagram, tab_compare = st.tabs(
    ["Layer table", "Parameters and compute", "Measured time", "Diagram", "Compare"])

with tab_table:
    view.layer_table(table, variant)

with tab_charts:
    st.plotly_chart(params_and_macs(table), width="stretch", key="arch_bars")
    st.caption("Blue: convolutions, orange: dense layers. Most parameters live in fc6 and fc7, "
               "most compute in the convolutions.")
    st.markdown("**Activation memory per layer** (float32, one image)")
    st.plotly_chart(activation_memory(table), width="stretch", key="arch_memory")

with tab_time:
    view.measured_time(variant, switches)

with tab_diagram:
    st.graphviz_chart(network_dot(table), width="content")

with tab_compare:
    view.comparison(table, sums, variant)

device_banner()
