"""One run: configuration, in-flight context, plan, rate limiter, the three stages and their wiring."""
