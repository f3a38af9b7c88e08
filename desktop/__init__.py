"""The desktop app (PySide6 + pyqtgraph). Widgets never import torch: they go through `desktop.engine`
(lazy core calls) and `desktop.jobs` (core work run through `desktop.threads`)."""
