"""Test-time augmentation's views, the one definition that params.yaml (evaluate.tta_views), train, evaluate,
mnist-predict and mnist-app use: the image, its four one-pixel shifts, then the four diagonals. Light on purpose:
the serving-only install imports it (no pydantic there)."""

from typing import Literal, get_args

ViewCount = Literal[1, 5, 9]  # n views are the first n offsets
# (rows down, columns right) of each view.
OFFSETS = [(0, 0), (-1, 0), (1, 0), (0, -1), (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1)]
VIEWS = {count: OFFSETS[:count] for count in get_args(ViewCount)}
# The views mnist-predict and the app use unless told otherwise, and at which train reports "not a digit".
DEFAULT_VIEWS = 5
