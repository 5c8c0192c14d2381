"""Pipeline tests: the library call per command (a package: its file names repeat others)."""
