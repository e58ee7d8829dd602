"""trio shells shared by node and coordinator; may import protocol only; never node or coordinator.

``node/`` and ``coordinator/`` never import each other, so I/O code both sides need
(the audit-log appender, ...) lives here once instead of being copied into both.
The logic stays in ``protocol``; a shell here only adds files, threads and timeouts.
"""
