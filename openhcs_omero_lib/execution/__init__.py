"""Running units of work: the executor (this process and worker processes) and progress."""
