"""``tkms chaos``: a steady signing load against a local cluster while nodes are
killed, stopped, cut off and delayed (through a loopback proxy per node) and the
coordinator is restarted; every returned signature is checked.

Modules: ``proxy`` (the loopback TCP proxy), ``schedule`` (the fault planner and its
down-budget rule, pure), ``httpc`` (a small trio HTTP/1.1 client), ``load`` (the
signing load and its per-request records), ``report`` (statistics and the promise),
``runner`` (the run itself), ``command`` (the CLI).
"""
