"""The share holder: trio server, PKCS#11 sealing, share store, policy, audit log."""
