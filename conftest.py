"""Loads the end-to-end fixtures (tests/e2e.py) as a plugin, so that every test module shares the one
small pipeline that `pipeline` builds per session. pytest takes `pytest_plugins` from this, the root
conftest, only; tests/conftest.py holds the other shared fixtures."""

pytest_plugins = ["tests.e2e"]
