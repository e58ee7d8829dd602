"""The orchestrator: sessions to nodes, DKG driver, signing aggregator, client API."""
