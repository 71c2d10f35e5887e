"""Running units of work: pixel sources, executors (the process pool), progress."""
