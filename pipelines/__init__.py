"""Workflows that join training and export (the ``protoinspect`` command, the demo).

The one layer allowed to import both :mod:`protoinspect.training` and :mod:`protoinspect.export`:
training and export never import each other, and the runtime (:mod:`protoinspect.sdk`) imports
neither. ``tests/test_layers.py`` enforces the graph.
"""
