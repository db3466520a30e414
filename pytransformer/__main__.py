"""python -m pytransformer: the same as the ``pytransformer`` command."""
import sys

from .cli import main

sys.exit(main())
