"""What travels on the topic: the wire protocol, the rules for paths, chunk sizing. Pure."""
