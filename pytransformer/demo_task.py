"""Kept for ``from pytransformer import demo_task``: the demo's task now
lives in :mod:`pytransformer.demo.task`."""
from .demo.task import *  # noqa: F401,F403
from .demo.task import __all__  # noqa: F401
