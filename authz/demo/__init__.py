"""A local demo: our server, a real Envoy and an echo upstream on loopback.

`python -m authz.demo` replays three callers through Envoy and checks each
outcome; `python -m authz.demo.load` measures latency under a burst.
`authz.demo.stack` starts and stops the processes for both and for the
end-to-end tests.
"""
