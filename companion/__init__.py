"""The companion pipeline: profiles -> papermill notebooks -> results -> the Jupyter Book and the README blocks.

It uses ``spartan_core``; the library never imports it, so the library stays usable without the book's
dependencies (papermill, jupyter-book, chromium).
"""
