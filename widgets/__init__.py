"""lmlab's notebook widgets (ipywidgets + plotly), installed as `lmlab.widgets`."""
