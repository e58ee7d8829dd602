"""tkms protocol layer: everything that is math or bytes and does no I/O.

Nothing in this package imports trio, sockets, files, clocks or logging. Time and
randomness are passed in by the caller (see ``protocol.rng``).
"""
