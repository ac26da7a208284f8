"""relay adapters: one folder per adapter, same file names in each."""
