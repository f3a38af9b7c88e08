"""The desktop app (PySide6 + pyqtgraph). Widgets never import torch: they go through
`desktop.services` and the QThread workers, which call `core`."""
