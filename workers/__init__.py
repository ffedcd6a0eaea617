"""Job queue, HTTP API and the command line: the outermost shell of Castwork."""
