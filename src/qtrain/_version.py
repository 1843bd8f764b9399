__version__ = "0.1.0"
"""The qtrain version string (also recorded in every saved config and checkpoint).

>>> import qtrain
>>> major, minor = (int(part) for part in qtrain.__version__.split(".")[:2])
>>> (major, minor) >= (0, 1)
True
"""
