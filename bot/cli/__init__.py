"""`expertbot`, the operator's command line: `app` builds it from one module per command group."""
