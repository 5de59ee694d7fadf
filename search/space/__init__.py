"""What is searched: a candidate (backend, truncation, keep schedule), the space of them, and the workload a latency target is about."""
