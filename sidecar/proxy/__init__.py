"""The proxy engine: one HTTP/1.1 engine for every mode (path, forward, intercepted CONNECT).

- ``listener``: the server side (llhttp through httptools), CONNECT included;
- ``message``: the parsed request, its body as it arrives, and answer framing;
- ``client``: the pooled upstream side;
- ``pipeline``: route, proxy keys, credential, auth driver, relay bookkeeping;
- ``intercept``: the CA and TLS termination of intercepted CONNECT tunnels.
"""
