"""Command-line tests, one file per command (a package: their names repeat those of the library tests)."""
