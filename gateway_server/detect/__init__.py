"""Detection: pure rules (``rules``), the store-side scans, one orchestrator, risk."""
