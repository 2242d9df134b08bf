"""The Streamlit side of the app: what the page scripts in pages/ share (widgets, the training
form, cached loaders, text helpers) and the web server's middleware. alexnet_core never imports it."""
