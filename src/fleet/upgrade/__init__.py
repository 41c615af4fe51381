"""``fleet upgrade`` (and SIGUSR2): the running master re-executes the newly installed fleet in
place (same pid) and hands itself what it holds: listening sockets, workers, WebSocket tunnels,
idle keep-alive clients, counters. See docs/upgrade-state.md for the state it hands over.

- ``state``: the versioned state format (pure: values in, values out);
- ``preflight``: runs the *new* code in a subprocess before anything is touched (rollback point);
- ``quiesce``: the old proxy stops taking work and gives up its connections' descriptors;
- ``handover``: the old master writes the state and calls ``execv``;
- ``adopt``: the new master reads the state and takes everything over.
"""
