"""``fleet balance`` across fleets on several hosts: hosts discovered through DNS
(``--resolve NAME:PORT``), each host's health from its ``/_fleet/health/ready``, and Bokeh
sessions routed to the host whose id they carry (``fleet up --host-id``).

The proxy is ``fleet.balancer``'s, unchanged: the "workers" it balances are the hosts (one
upstream per host id), and ``routing.HostRouting`` is its affinity rule. Pure decisions live in
``routing`` and ``dnsplan``; ``resolve``, ``hostprobe`` and ``front`` do the I/O.
"""
