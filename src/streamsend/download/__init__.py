"""The downloader: transfer bookkeeping (pure), staging, delivery, the ledger of
durable steps, and the service loop."""
