"""Diffusion core: schedules, the course ContextUnet, samplers, data, training, checkpoints.

Pure torch + numpy. This package never imports Qt (a test enforces it).
"""
