"""What the test suites share and no deployable needs: the real-Kafka pytest fixtures (`kafka`), and per
service its test doubles, signers, receivers and app runners (`ingest`, `crm_writer`, `order_reader`,
`console`, `crm_emulator`). A workspace member of its own, so no image installs it (issue 17)."""
