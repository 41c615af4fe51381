"""What stands between the clients and the workers of ``fleet up``: a *front*.

``interface`` names what the master needs from a front (``Front``) and what a front needs from
the supervisor (``Crew``), and imports none of the three fronts:

- ``builtin``: fleet's own proxy (``fleet.balancer``), in the master or in N proxy processes
  (``--proxy-processes``);
- ``managed``: nginx or HAProxy run by fleet (``--proxy nginx|haproxy``, ``fleet.dataplane``);
- ``noproxy``: no proxy at all (``--no-proxy``): clients talk to the workers' ports.

``factory.front_for(config, ...)`` is the one place that reads which kind the config asks for.
"""
