"""carealarm: the program — command line, settings, embedded broker and the one-process runner."""

__version__ = "0.1.0"
