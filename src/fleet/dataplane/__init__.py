"""``fleet up --proxy nginx|haproxy``: fleet runs nginx or HAProxy as its data plane.

- ``model``: pure: which server (port slot) takes new requests, which drains; what the server
  cannot honour; HAProxy's runtime-API commands and ``show stat`` parsing.
- ``files``: the private directory and the rendered configuration (``fleet config``'s
  renderers with a ``Managed`` deployment).
- ``process``: the server as a supervised child (spawn, check, restart with backoff, stop).
- ``haproxy`` / ``nginx``: keeping the server in step with fleet's workers.
- ``internal``: fleet's own HTTP listener on a unix socket (metrics, ``/_fleet/``) that the
  server routes to.
"""
