"""What every layer and command shares: user-facing errors and exit codes, atomic file
writes, CLI helpers, lazy package exports. Nothing here imports torch."""
