"""Run at the start of every Python process the tests start (tests/hooks is first on their PYTHONPATH):
installs the hooks their environment asks for (see injected.py)."""
import injected

injected.install()
