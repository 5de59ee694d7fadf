"""The study: its durable record (an Optuna RDB study), the in-memory study NSGA-II samples in, and the trial loop that fills both; several workers may share one."""
