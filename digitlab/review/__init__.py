"""The pull-request report that CI posts (`python -m digitlab.review.report --rev main`): the report
itself (report), both versions' answers paired and tested (paired), its plots (plots), the base built the
way the head is (rebuild)."""

import digitlab.shared  # noqa: F401  (TensorFlow's and Matplotlib's settings, before either is imported)
