"""Speaking to the service: protocol paths, typed outcomes, reading answers, the client and the
transports under it (aiohttp for runs, MockTransport for tests)."""
