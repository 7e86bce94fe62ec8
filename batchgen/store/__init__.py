"""What a run keeps: the ledger (event kinds, the fold, append), the folder lock, image checks."""
