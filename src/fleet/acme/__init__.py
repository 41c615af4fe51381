"""Automatic HTTPS: fleet obtains and renews its own certificate from an ACME CA (RFC 8555).

- ``policy``: pure: the certificate's lifecycle (an Enum and its ``StateTable``), when to renew,
  how long to wait after a failure, which challenge to try first;
- ``paths``: pure: where the state directory keeps what (the certificate path the proxy loads);
- ``store``: the state directory: permissions checked, files written whole, file locks;
- ``answers``: what the proxy reads to answer a challenge (HTTP-01 files, TLS-ALPN-01 certificates);
- ``client``: the blocking ACME conversation (certbot's ``acme`` library), run in a thread;
- ``manager``: the master's background task that ties them together.

The ``acme`` library (and ``cryptography``) is only imported by ``client`` and ``store``: a fleet
without ``--domain`` does not need the ``fleet[acme]`` extra.
"""
