"""Fixtures for every suite come from ``tests/support``; see each module's docstring.

- ``tests.support.sandbox``: ``sandbox``, ``sandbox_factory`` (a started emulator), ``clock``, ``http``
- ``tests.support.service``: ``service`` (a scripted HTTP server on a real socket), ``client``
- ``tests.support.cli``: ``start_cli`` (a ``batchgen`` subprocess, SIGKILLed at the end)
"""

pytest_plugins = ["tests.support.sandbox", "tests.support.service", "tests.support.cli"]
