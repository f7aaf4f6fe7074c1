"""The test suites, one package per concern; shared helpers are imported as tests.<module>."""
