"""The uploader: scanning input.dir, reading files into records, acknowledgements,
the state of what was sent, and the service loop."""
