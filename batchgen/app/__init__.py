"""Between the command line and the engine: options, key, balance pre-flight, plan text."""
