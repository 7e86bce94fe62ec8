"""Speaking to the service: protocol paths, typed outcomes, reading answers, the HTTP client."""
