"""Shared library code for the personality-training toolkit.

Nothing here imports TensorFlow at import time; modules that need it import it
inside the functions that use it, so the scripts' ``--help`` answers fast.
"""
