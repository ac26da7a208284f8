"""pytest plugin (registered through `pytest11`): fixtures for adapter contract suites."""
