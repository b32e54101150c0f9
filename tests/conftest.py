"""Shared pytest setup: the local services are fixtures in tests/fixtures (started once per session)."""

pytest_plugins = ["tests.fixtures.azurite", "tests.fixtures.emulator"]
