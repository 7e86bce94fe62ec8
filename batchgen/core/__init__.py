"""What every layer may use: the exception tree, exit codes and the one canonical JSON."""
